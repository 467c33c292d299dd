"""The mutants ``tests/mutants.py`` seeds, one fault each.

A mutant is one exact replacement in one file of the project: OLD must occur
exactly once in FILE, so the list follows the code (the runner refuses to run
when it does not). SELECTION names the tests most likely to catch it, the one
meant to catch it first; BREAKS says what the fault breaks.

Mutants that turned out to be equivalent (no behaviour any test could observe)
are not listed; they are described at the end of this module.
"""

from __future__ import annotations

import dataclasses

__all__ = ["MUTANTS", "Mutant"]


@dataclasses.dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    selection: tuple[str, ...]
    breaks: str


MECHANISMS = "tests/test_mechanisms.py"
DELIVERY = "tests/test_delivery.py"
STAGES = "tests/test_stages.py"
EDGES = "tests/test_edges.py"
ENTRY_FAULTS = "tests/test_entry_faults.py"
GROUP_LOSS = "tests/test_group_loss.py"
PRODUCER = "tests/test_producer.py"
RETENTION = "tests/test_retention.py"
VERSIONS = "tests/test_versions.py"
PERSONAL = "tests/test_personal.py"
ARCHIVE = "tests/test_archive.py"

MUTANTS: tuple[Mutant, ...] = (
    # --- the window -------------------------------------------------------------------
    Mutant(
        "read-room-ignores-reserved",
        "backbone/consume/state.py",
        "return self.limit - len(self.held) - self.sending - self.reserved",
        "return self.limit - len(self.held) - self.sending",
        (
            f"{MECHANISMS}::test_a_read_never_takes_the_room_a_claim_scan_holds",
            STAGES,
        ),
        "a read takes the room a claim scan holds: max_in_flight is overshot",
    ),
    Mutant(
        "release-does-not-wake-the-reader",
        "backbone/consume/state.py",
        "        self.reserved -= count\n        if count and self._waiting:",
        "        self.reserved -= count\n        if False:",
        (f"{EDGES}::test_claim_scans_never_leave_the_reader_waiting", STAGES),
        "room a claim scan gives back never wakes a reader waiting for it",
    ),
    Mutant(
        "finish-does-not-wake-the-reader",
        "backbone/consume/state.py",
        "if self._waiting and self.read_room() >= self._wanted:",
        "if False:",
        (f"{STAGES}::test_window_wakes_a_waiting_reader_on_release_and_finish",),
        "a finished event never wakes a reader waiting for room (NOACK: for ever)",
    ),
    Mutant(
        "in-flight-ignores-queued-acks",
        "backbone/consume/state.py",
        "return len(self.held) + len(self.acks) + self.sending + self.reserved",
        "return len(self.held) + self.sending + self.reserved",
        (STAGES, f"{EDGES}::test_claims_and_reads_together_stay_within_max_in_flight"),
        "finished events whose ack is not written yet no longer count as in flight",
    ),
    # --- the reader -------------------------------------------------------------------
    Mutant(
        "lost-read-reply-not-recovered",
        "backbone/consume/reader.py",
        "                state.needs_recovery = not state.noack\n"
        "                continue",
        "                continue",
        (f"{EDGES}::test_lost_read_reply_is_recovered_at_once",),
        "entries of a read whose reply was lost wait for claim_idle (or for ever)",
    ),
    Mutant(
        "recovery-misses-its-own-delivery",
        "backbone/consume/reader.py",
        'int(row["times_delivered"]) + 1',
        'int(row["times_delivered"])',
        (f"{DELIVERY}::test_restart_under_same_name_reprocesses_own_pending",),
        "a recovered event's delivery count omits the recovery's own XCLAIM",
    ),
    # --- the fetcher ------------------------------------------------------------------
    Mutant(
        "fetch-raises-on-one-entry",
        "backbone/consume/fetcher.py",
        "await pipe.execute(raise_on_error=False)",
        "await pipe.execute()",
        (
            f"{ENTRY_FAULTS}::test_a_poisoned_own_pending_entry_does_not_stop_a_restart",
            ENTRY_FAULTS,
        ),
        "one payload key of another type fails the recovery or claim of all",
    ),
    Mutant(
        "every-redrive-is-mine",
        "backbone/consume/fetcher.py",
        "return not only or only == self._group_bytes",
        "return True",
        (f"{DELIVERY}::test_redrive_goes_to_the_failed_group_only",),
        "a re-driven event is handled (or dead-lettered) by every group",
    ),
    # --- the claimer ------------------------------------------------------------------
    Mutant(
        "leases-never-renewed",
        "backbone/consume/claimer.py",
        '"""Reset the idle time of events this consumer holds."""\n',
        '"""Reset the idle time of events this consumer holds."""\n        return\n',
        (f"{DELIVERY}::test_slow_but_live_consumer_keeps_its_events",),
        "a slow but live consumer's events are claimed by other members",
    ),
    Mutant(
        "claim-scan-holds-no-room",
        "backbone/consume/claimer.py",
        "        window.reserve(free)\n",
        "",
        (f"{MECHANISMS}::test_a_read_never_takes_the_room_a_claim_scan_holds",),
        "a read fills the room a claim scan is about to fill: over max_in_flight",
    ),
    # --- the workers ------------------------------------------------------------------
    Mutant(
        "mark-before-the-handler",
        "backbone/consume/workers.py",
        "        while True:\n            context = LazyContext(state, d, operation)\n",
        "        while True:\n"
        "            if self.marks is not None:\n"
        "                await self.marks.mark_done(d)\n"
        "            context = LazyContext(state, d, operation)\n",
        (f"{MECHANISMS}::test_an_interrupted_handler_leaves_no_idempotency_mark",),
        "an interrupted handler's event is marked handled and skipped: lost",
    ),
    Mutant(
        "last-delivery-refused",
        "backbone/consume/decisions.py",
        "return d.delivery_count > self._max_deliveries",
        "return d.delivery_count >= self._max_deliveries",
        (
            f"{MECHANISMS}::test_a_claimed_event_at_max_deliveries_gets_its_last_attempt",
            f"{MECHANISMS}::test_a_recovered_event_at_max_deliveries_gets_its_last_attempt",
        ),
        "an event claimed or recovered at max_deliveries never gets its last attempt",
    ),
    Mutant(
        "retry-not-counted-in-redis",
        "backbone/consume/retries.py",
        "                    retrycount=next_count,\n",
        "",
        (f"{MECHANISMS}::test_retries_are_deliveries_in_redis_and_survive_a_restart",),
        "retries are not delivery counts in Redis: a crash forgets them",
    ),
    Mutant(
        "retry-after-acked-elsewhere",
        "backbone/consume/retries.py",
        "            if not claimed:\n",
        "            if False:\n",
        (f"{MECHANISMS}::test_no_retry_for_an_event_acknowledged_meanwhile",),
        "an event another member acked meanwhile is handled again by a retry",
    ),
    Mutant(
        "stop-counts-as-a-failure",
        "backbone/consume/retries.py",
        "if isinstance(exc, asyncio.CancelledError) and _being_cancelled():",
        "if False:",
        (f"{MECHANISMS}::test_a_handler_cancelled_by_a_stop_has_not_failed",),
        "a handler cancelled by a stop counts as failed: its event is dead-lettered",
    ),
    Mutant(
        "idempotency-mark-ignored",
        "backbone/consume/decisions.py",
        "        if d.done_mark:\n",
        "        if False:\n",
        (f"{DELIVERY}::test_idempotent_guard_skips_a_redelivered_event",),
        "an event the group already handled is handled again",
    ),
    Mutant(
        "manual-ack-acks-anyway",
        "backbone/consume/workers.py",
        "if self._ack_after_success and not d.acked:",
        "if not d.acked:",
        (f"{DELIVERY}::test_manual_ack_acks_only_what_the_handler_acks",),
        "AckPolicy.MANUAL acks every event the handler returns from",
    ),
    Mutant(
        "manual-ack-acks-anyway-in-the-loop",
        "backbone/consume/workers.py",
        "window.finish_handled(d, ack=ack_after_success, noack=noack)",
        "window.finish_handled(d, ack=True, noack=noack)",
        (f"{DELIVERY}::test_manual_ack_acks_only_what_the_handler_acks",),
        "AckPolicy.MANUAL acks every event the handler returns from (no timeout)",
    ),
    # --- the acker, the dead-letter step, the context, the group ----------------------
    Mutant(
        "failed-acks-dropped",
        "backbone/consume/acker.py",
        "                window.acks_failed(batch)",
        "                window.acks_written(batch)",
        (f"{STAGES}::test_acker_keeps_acks_through_a_failure_and_writes_them",),
        "acks of a failed XACK are forgotten: their events stay pending for ever",
    ),
    Mutant(
        "dead-letter-with-noack-needs-pending",
        "backbone/consume/deadletter.py",
        "only_if_pending=not state.noack,",
        "only_if_pending=True,",
        (f"{MECHANISMS}::test_reading_with_noack_still_dead_letters",),
        "with AckPolicy.ON_RECEIPT bad input is never dead-lettered: it is lost",
    ),
    Mutant(
        "context-catches-value-error-only",
        "backbone/consume/context.py",
        "except (ValueError, OverflowError, OSError):",
        "except ValueError:",
        (
            f"{STAGES}::test_context_reads_what_it_can",
            f"{ENTRY_FAULTS}::test_metadata_out_of_range_never_fails_a_valid_event",
        ),
        "a producer time beyond the platform's range fails a valid event",
    ),
    Mutant(
        "group-forgets-order",
        "backbone/consume/group.py",
        'if self.last_id != "0-0" and id_key(entry_id) <= id_key(self.last_id):',
        "if False:",
        (f"{STAGES}::test_group_remembers_the_newest_entry_only", GROUP_LOSS),
        "the group remembers a claimed older entry as the last one seen",
    ),
    Mutant(
        "group-position-not-learned-at-start",
        "backbone/consume/group.py",
        'if self.last_id == "0-0":',
        "if False:",
        (f"{GROUP_LOSS}::test_a_group_gone_before_any_read_goes_on_from_where_it_was",),
        "a group lost before the first read starts over at the stream's beginning",
    ),
    Mutant(
        "group-forgets-held-events",
        "backbone/consume/group.py",
        "                start_after = before(oldest)",
        "                pass",
        (f"{GROUP_LOSS}::test_events_held_when_the_group_vanishes_are_pending_again",),
        "events held when the group vanished are in no pending list: a crash "
        "loses them",
    ),
    Mutant(
        "handler-base-exception-kills-the-worker",
        "backbone/consume/workers.py",
        "            except BaseException as exc:\n"
        "                # A handler's failure",
        "            except Exception as exc:\n                # A handler's failure",
        (
            "tests/test_lifecycle.py"
            "::test_a_handler_raising_anything_fails_like_any_handler",
        ),
        "a handler raising GeneratorExit or a BaseException kills its worker silently",
    ),
    Mutant(
        "unstarted-events-handled-on-stop",
        "backbone/consume/subscription.py",
        "        state.window.drop_unstarted()\n",
        "",
        (
            f"{DELIVERY}::test_stop_finishes_running_handlers_and_leaves_the_rest_pending",
        ),
        "a stop starts the events read but not started instead of leaving them",
    ),
    Mutant(
        "start-fails-during-an-outage",
        "backbone/consume/subscription.py",
        "                if not is_transient(exc):\n                    raise\n",
        "                raise\n",
        (f"{EDGES}::test_start_during_an_outage_keeps_the_requested_start",),
        "a subscription started while Redis is away fails instead of waiting",
    ),
    Mutant(
        "nogroup-refused",
        "backbone/faults.py",
        "            return Fault.NO_GROUP",
        "            return Fault.REFUSED",
        (
            f"{STAGES}::test_errors_are_classified_once",
            f"{DELIVERY}::test_vanished_group_is_recreated_by_the_running_consumer",
        ),
        "a vanished group is never recreated: the consumer retries for ever",
    ),
    # --- the scripts ------------------------------------------------------------------
    Mutant(
        "read-hmget-not-protected",
        "backbone/lua/read.lua",
        "redis.pcall('HMGET'",
        "redis.call('HMGET'",
        (
            f"{ENTRY_FAULTS}::test_a_payload_key_of_another_type_is_dead_lettered_on_read",
        ),
        "one payload key of another type fails every read of the group",
    ),
    Mutant(
        "read-drops-carried-acks",
        "backbone/lua/read.lua",
        "for first = pos, #ARGV, 4000 do",
        "for first = pos, pos - 1, 4000 do",
        (
            f"{DELIVERY}::test_in_flight_never_exceeds_max_in_flight",
            f"{DELIVERY}::test_restart_under_same_name_reprocesses_own_pending",
        ),
        "acks carried by a read are never written: handled events stay pending",
    ),
    Mutant(
        "read-without-noack",
        "backbone/lua/read.lua",
        "if mode == '1' then args[#args + 1] = 'NOACK' end",
        "",
        (f"{DELIVERY}::test_ack_on_receipt_keeps_nothing_pending",),
        "AckPolicy.ON_RECEIPT leaves every event pending",
    ),
    Mutant(
        "pipelined-read-without-noack",
        "backbone/consume/pipelined.py",
        'noack = ("NOACK",) if state.noack else ()',
        "noack = ()",
        (f"{DELIVERY}::test_ack_on_receipt_keeps_nothing_pending",),
        "AckPolicy.ON_RECEIPT leaves every event pending (plain reads)",
    ),
    Mutant(
        "read-mark-of-the-redriven-copy",
        "backbone/lua/read.lua",
        "mark = redis.pcall('ZSCORE', marks, ri or id)",
        "mark = redis.pcall('ZSCORE', marks, id)",
        (
            f"{MECHANISMS}::"
            "test_a_redriven_event_already_handled_is_skipped_by_its_original_id",
        ),
        "a re-driven event the group already handled is handled again",
    ),
    Mutant(
        "dead-letter-skips-pending-check",
        "backbone/lua/dead_letter.lua",
        "  if #pending == 0 then",
        "  if false then",
        (f"{MECHANISMS}::test_no_dead_letter_for_an_event_acknowledged_meanwhile",),
        "an event another member acked meanwhile is dead-lettered all the same",
    ),
    Mutant(
        "dead-letter-without-payload-copy",
        "backbone/lua/dead_letter.lua",
        "if redis.call('EXISTS', KEYS[3]) == 1 then",
        "if false then",
        (f"{DELIVERY}::test_failing_handler_is_retried_then_dead_lettered",),
        "a dead letter keeps no copy of its payload: it cannot be shown or re-driven",
    ),
    Mutant(
        "dead-letter-without-ack",
        "backbone/lua/dead_letter.lua",
        "  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n",
        "",
        (f"{DELIVERY}::test_failing_handler_is_retried_then_dead_lettered",),
        "a dead-lettered event stays pending and comes back",
    ),
    Mutant(
        "group-recreated-without-comparing-fields",
        "backbone/lua/group.lua",
        "    if same then start = ARGV[3] end",
        "    start = ARGV[3]",
        (
            f"{GROUP_LOSS}::test_an_entry_with_the_last_seen_id_but_other_fields_is_not_the_same",
        ),
        "a new stream holding an entry with the last id seen skips its first events",
    ),
    Mutant(
        "group-always-recreated-at-last-id",
        "backbone/lua/group.lua",
        "local start = '0'",
        "local start = ARGV[2]",
        (f"{GROUP_LOSS}::test_a_stream_back_with_lower_ids_skips_no_event", GROUP_LOSS),
        "a stream back with lower ids (empty restart, lagging replica) is skipped",
    ),
    Mutant(
        "publish-stale-attempt-written",
        "backbone/lua/publish.lua",
        "if seq ~= nil and batch < seq then",
        "if false then",
        (f"{PRODUCER}::test_an_attempt_older_than_the_last_batch_is_refused",),
        "an attempt arriving after later batches writes its batch a second time",
    ),
    Mutant(
        "publish-retry-written-again",
        "backbone/lua/publish.lua",
        "  if seq == batch then",
        "  if false then",
        (f"{PRODUCER}::test_lost_reply_is_retried_without_duplicate", PRODUCER),
        "a retried batch whose first attempt was written is written twice",
    ),
    Mutant(
        "publish-retry-taken-for-a-new-batch",
        "backbone/lua/publish.lua",
        "if recorded and recorded >= batch then",
        "if recorded and recorded > batch then",
        (f"{PRODUCER}::test_lost_reply_is_retried_without_duplicate", PRODUCER),
        "a retry is not compared with the record: its batch is written twice",
    ),
    Mutant(
        "publish-rollback-keeps-entries",
        "backbone/lua/publish.lua",
        "  for j = 1, entries do",
        "  for j = 1, 0 do",
        (
            "tests/test_layout.py::test_failing_event_in_atomic_batch_rolls_back_all",
            "tests/test_layout.py::test_failing_write_leaves_neither_part",
        ),
        "a refused batch leaves the stream entries written before the refusal",
    ),
    Mutant(
        "publish-refusal-not-recorded",
        "backbone/lua/publish.lua",
        "  redis_pcall('SET', record_key, batch_arg .. ' ! ' .. tostring(err), 'PX', "
        "ttl)\n",
        "",
        (
            f"{PRODUCER}::test_late_attempt_of_a_refused_batch_writes_nothing",
            f"{PRODUCER}::test_lost_refusal_is_the_answer_to_the_retry",
        ),
        "a late attempt of a refused batch writes it after the caller had the error",
    ),
    Mutant(
        "redrive-for-every-group",
        "backbone/lua/redrive.lua",
        "meta[#meta + 1] = 'rg'\nmeta[#meta + 1] = group or ''\n",
        "",
        (f"{DELIVERY}::test_redrive_goes_to_the_failed_group_only",),
        "a re-driven dead letter goes to every group, not the one that failed",
    ),
    # --- the codec --------------------------------------------------------------------
    Mutant(
        "codec-fast-path-takes-subclasses",
        "backbone/param_codec.py",
        "                if type(value) is exact:\n"
        "                    return pack(value)",
        "                if isinstance(value, exact):\n"
        "                    return pack(value)",
        (
            "tests/test_validation.py::"
            "test_a_related_type_is_refused_not_taken_for_the_exact_one",
            "tests/test_validation.py",
        ),
        "bool is stored for int, an IntEnum as itself: consumers get another type",
    ),
    Mutant(
        "codec-models-not-revalidated",
        "backbone/param_codec.py",
        "self.encode = self._encoder(packer, _has_model(spec.annotation))",
        "self.encode = self._encoder(packer, False)",
        ("tests/test_validation.py::test_a_model_built_without_validation_is_refused",),
        "a model built with model_construct is published and refused by consumers",
    ),
    # --- retention ------------------------------------------------------------------
    Mutant(
        "trim-ignores-pending",
        "backbone/lua/trim.lua",
        "if tonumber(info['pending']) > 0 then",
        "if false then",
        (f"{RETENTION}::test_an_entry_pending_in_a_group_stays_unless_forced",),
        "trimming removes entries a group read but has not acknowledged",
    ),
    Mutant(
        "trim-ignores-unread",
        "backbone/lua/trim.lua",
        "local held, reason = first_from('(' .. info['last-delivered-id']), 'unread'",
        "local held, reason = nil, 'unread'",
        (f"{RETENTION}::test_an_entry_a_group_has_not_read_stays_unless_forced",),
        "trimming removes entries a group has not read yet",
    ),
    Mutant(
        "trim-ignores-projections",
        "backbone/lua/trim.lua",
        "hold('projection', name, first_from('(' .. saved[1]), 'not applied yet')",
        "hold('projection', name, nil, 'not applied yet')",
        (f"{RETENTION}::test_a_projection_holds_the_events_it_has_not_applied",),
        "trimming removes events a projection has not applied",
    ),
    Mutant(
        "trim-ignores-aggregates",
        "backbone/lua/trim.lua",
        "if mode == 'events' and values['a'] and aggregate == nil then",
        "if false then",
        (f"{RETENTION}::test_events_of_aggregates_stay_unless_forced",),
        "trimming removes an event store's history",
    ),
    Mutant(
        "trim-keeps-payloads",
        "backbone/lua/trim.lua",
        "redis.call(dry and 'EXISTS' or 'DEL', unpack(payloads))",
        "redis.call('EXISTS', unpack(payloads))",
        (
            f"{RETENTION}::"
            "test_trimming_by_length_removes_the_oldest_entries_and_their_payloads",
        ),
        "trimmed entries leave their payload hashes behind",
    ),
    Mutant(
        "retention-failure-ends-the-policy",
        "backbone/retainer.py",
        "            except Exception as exc:\n                failures += 1",
        "            except OSError as exc:\n                failures += 1",
        (f"{RETENTION}::test_a_failing_policy_never_stops_the_consumer",),
        "one refused trim ends a subscription's retention for good",
    ),
    # --- versions, personal data, the archive -----------------------------------------
    Mutant(
        "other-version-read-as-current",
        "backbone/lua/read.lua",
        "if version and version ~= versions[op] then",
        "if false then",
        (
            f"{VERSIONS}::test_older_events_reach_a_newer_handler_in_the_current_shape",
            VERSIONS,
        ),
        "an older event is read by the current field names: renamed fields are lost",
    ),
    Mutant(
        "upcasters-skipped",
        "backbone/codec.py",
        "upcaster = op.upcasters.get(step)",
        "upcaster = None",
        (f"{VERSIONS}::test_replay_passes_old_events_through_the_upcasters", VERSIONS),
        "older payloads reach handlers in their old shape (or are dead-lettered)",
    ),
    Mutant(
        "retired-version-written",
        "backbone/lua/publish.lua",
        "if status == 'retired' then return {RETIRED, mark} end",
        "if false then return {RETIRED, mark} end",
        (f"{VERSIONS}::test_a_retired_version_is_refused_and_a_deprecated_one_warns",),
        "an old producer keeps writing a version a newer contract retired",
    ),
    Mutant(
        "version-marks-go-down",
        "backbone/lua/versions.lua",
        "if rank[status] and (rank[now] or 0) < rank[status] then",
        "if rank[status] then",
        (f"{VERSIONS}::test_marks_only_go_up_whatever_order_processes_start_in",),
        "a process with an older contract un-retires a version",
    ),
    Mutant(
        "personal-value-stored-plain",
        "backbone/keyring.py",
        "values[index] = seal(values[index], kid, keys[kid])",
        "values[index] = bytes(values[index])",
        (f"{PERSONAL}::test_redis_holds_no_plaintext_while_handlers_see_it",),
        "personal values are written in plaintext: erasure cannot reach them",
    ),
    Mutant(
        "erase-keeps-the-key",
        "backbone/lua/keyring.lua",
        "if redis.call('HDEL', KEYS[1], ARGV[2]) == 1 then",
        "if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then",
        (f"{PERSONAL}::test_after_erase_handlers_see_erased_and_the_rest_stays",),
        "erase reports success and the subject's data stays readable",
    ),
    Mutant(
        "archive-drops-a-batch-postgresql-refused",
        "backbone/archive/writer.py",
        "                await self.postgres.wait(exc)\n                continue",
        "                await self.postgres.wait(exc)\n                return",
        (
            f"{ARCHIVE}::"
            "test_a_postgresql_outage_acks_nothing_and_reading_stops_until_it_is_back",
        ),
        "a batch PostgreSQL did not take is acknowledged: archived events are lost",
    ),
)

# Equivalent mutants, not listed (no behaviour changes that a test could see):
#
# * read.lua without its re-drive group check before the HMGET,
#   ``if names and (not rg or rg == '' or rg == ARGV[1]) then`` made
#   ``if names then``: the payload of an entry re-driven for another group is
#   fetched too, but the worker skips that entry (``Fetcher.mine``) before it
#   looks at its values or its fault, so only the cost of the read changes
#   (test_delivery, test_entry_faults, test_dlq_cli and test_mechanisms all pass
#   with it).
