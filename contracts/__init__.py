"""Sample event contracts and the modules `backbone codegen contracts` makes of them.

Installed, this package is ``backbone.samples.contracts``; its modules import
each other relatively, so they work under either name.
"""
