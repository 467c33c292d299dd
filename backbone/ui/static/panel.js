// The chosen stream's panel of the dashboard: its dead letters (with the
// re-drive and purge buttons when actions are on) and a live tail of its events.
// Uses app.js's state and helpers; every value is put in the page as text.
"use strict";

function renderSelect(streams) {
  const select = $("stream-select");
  const names = streams.map((s) => s.uri);
  if (state.selected === null && names.length) state.selected = names[0];
  const current = Array.from(select.options).map((o) => o.value);
  const wanted = names.includes(state.selected) || state.selected === null ? names : [...names, state.selected];
  if (current.join("\n") !== wanted.join("\n")) {
    select.replaceChildren(...wanted.map((name) => el("option", { value: name }, name)));
  }
  if (state.selected !== null) select.value = state.selected;
}

function select(uri) {
  if (uri === state.selected) return;
  state.selected = uri;
  state.tail = { uri: null, cursor: null, paused: state.tail.paused };
  state.letters = { uri: null, key: null, at: 0 };
  $("tail").replaceChildren();
  $("letters").replaceChildren();
  for (const row of $("streams").tBodies[0].rows) row.classList.toggle("selected", row.dataset.stream === uri);
  $("stream-select").value = uri;
  refreshLetters(state.streams);
}

function refreshLetters(streams) {
  const uri = state.selected;
  if (uri === null) return;
  const stream = streams.find((s) => s.uri === uri);
  const key = stream ? `${stream.dead_letters}` : "gone";
  // Reload when the count changes (at most every 2 s: a storm of dead letters
  // must not become a storm of reads), and every 5 s (a re-drive elsewhere may
  // replace letters without changing their number).
  const age = Date.now() - state.letters.at;
  if (state.letters.uri === uri && (age < 2000 || (state.letters.key === key && age < 5000))) return;
  state.letters = { uri, key, at: Date.now() };
  getJSON(`/api/deadletters?uri=${encodeURIComponent(uri)}`)
    .then((found) => { if (state.selected === uri) renderLetters(found); })
    .catch((error) => { $("letters-count").textContent = `(${error.message})`; });
}

function renderLetters(found) {
  const shown = found.letters.length;
  $("letters-count").textContent = shown < found.total ? `(${found.total}; the oldest ${shown} shown)` : `(${found.total})`;
  const open = new Set(Array.from(document.querySelectorAll(".letter details[open]")).map((d) => d.closest(".letter").dataset.letter));
  $("letters").replaceChildren(...found.letters.map((letter) => letterCard(found.uri, letter, open)));
}

function letterCard(uri, letter, open) {
  const card = el("article", { class: "letter", "data-letter": letter.id },
    el("header", {}, el("span", { class: "id" }, letter.id), el("span", { class: "reason" }, letter.reason),
      el("span", {}, `group ${letter.group}`), el("span", {}, letter.metadata.o || "<no operation>"),
      el("span", { class: "muted" }, `${letter.deliveries} deliveries · ${clock(letter.at)}`)),
    el("div", { class: "error" }, `${letter.error_type}: ${letter.error_message}`),
    el("pre", { class: "payload" }, JSON.stringify(letter.payload, null, 2)));
  if (letter.traceback) {
    const details = el("details", { open: open.has(letter.id) }, el("summary", {}, "traceback"), el("pre", {}, letter.traceback));
    card.append(details);
  }
  if (state.actions) {
    const redrive = el("button", { type: "button", class: "primary", "data-action": "redrive" }, "Re-drive");
    const purge = el("button", { type: "button", class: "danger", "data-action": "purge" }, "Purge");
    redrive.addEventListener("click", () => confirmAction("redrive", uri, letter));
    purge.addEventListener("click", () => confirmAction("purge", uri, letter));
    card.append(el("div", { class: "buttons" }, redrive, purge));
  }
  return card;
}

function confirmAction(action, uri, letter) {
  const text = action === "redrive"
    ? `Re-drive dead letter ${letter.id} (event ${letter.event_id}) to group ${letter.group} of stream ${uri}?`
    : `Purge dead letter ${letter.id} of stream ${uri} and its payload copy for good?`;
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = action === "redrive" ? "Re-drive" : "Purge";
  dialog.dataset.action = action;
  const done = async (confirmed) => {
    dialog.close();
    $("confirm-ok").onclick = null;
    $("confirm-cancel").onclick = null;
    if (!confirmed) return;
    try {
      const result = await act(action, uri, [letter.id]);
      const verb = action === "redrive" ? "re-driven" : "purged";
      toast(`${verb}: ${result.done} of ${result.wanted}${result.warning ? ` (${result.warning})` : ""}`, result.warning ? "error" : "info");
    } catch (error) {
      toast(`${action === "redrive" ? "re-drive" : "purge"} refused: ${error.message}`, "error");
    }
    state.letters.at = 0;
    refreshLetters(state.streams);
  };
  $("confirm-ok").onclick = () => done(true);
  $("confirm-cancel").onclick = () => done(false);
  dialog.showModal();
}

async function tailTick() {
  try {
    const uri = state.selected;
    if (uri !== null && !state.tail.paused) {
      const after = state.tail.uri === uri && state.tail.cursor ? `&after=${encodeURIComponent(state.tail.cursor)}` : "";
      const found = await getJSON(`/api/tail?uri=${encodeURIComponent(uri)}${after}`);
      if (state.selected === uri) {
        state.tail.uri = uri;
        state.tail.cursor = found.cursor;
        $("tail-note").textContent = found.exists ? "" : "This stream does not exist (now); new events show when they come.";
        addTail(found.events);
        if (found.more) { setTimeout(tailTick, 0); return; }
      }
    }
  } catch (error) {
    $("tail-note").textContent = `Tail paused by an error: ${error.message}; retrying.`;
  }
  setTimeout(tailTick, state.interval);
}

function addTail(events) {
  const list = $("tail");
  for (const event of events) {
    const args = event.payload === null
      ? `<payload ${event.payload_error}>`
      : Object.entries(event.payload).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
    const extra = event.redriven_for ? ` redriven-for=${event.redriven_for} original=${event.original_id}` : "";
    list.prepend(el("li", { "data-id": event.id },
      `${event.id} `, el("span", { class: "op" }, event.operation ?? "<no operation>"), `(${args})`,
      el("span", { class: "muted" }, ` ${event.produced_at ? clock(event.produced_at) : ""}${extra}`)));
  }
  while (list.children.length > TAIL_KEEP) list.lastChild.remove();
}
