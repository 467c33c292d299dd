"""Sample event contracts and the modules `backbone codegen contracts` makes of them."""
