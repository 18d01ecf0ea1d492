// The rule editor: line numbers, and a live preview (validation, tests, backtest) fetched
// from the server as the analyst types. No framework; works without it (Save still posts).
(function () {
  "use strict";
  const form = document.getElementById("editor");
  if (!form) return;
  const text = document.getElementById("yaml");
  const gutter = form.querySelector(".gutter");
  const preview = document.getElementById("preview");
  const windowSelect = document.getElementById("window");
  let timer = null;
  let inFlight = null;
  let sent = 0;

  function problemLines() {
    const lines = new Set();
    preview.querySelectorAll(".problem[data-line]").forEach(function (li) {
      if (li.dataset.line) lines.add(Number(li.dataset.line));
    });
    return lines;
  }

  function numberLines() {
    const count = text.value.split("\n").length;
    const bad = problemLines();
    const out = [];
    for (let i = 1; i <= count; i++) out.push(bad.has(i) ? "\u25b6" + i : String(i));
    gutter.textContent = out.join("\n");
    gutter.scrollTop = text.scrollTop;
  }

  async function refresh() {
    if (inFlight) inFlight.abort();
    inFlight = new AbortController();
    const id = ++sent;
    preview.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(form.dataset.preview, {
        method: "POST", body: new FormData(form), signal: inFlight.signal,
        credentials: "same-origin",
      });
      const body = await response.text();
      if (id !== sent) return;
      if (!response.ok) {
        preview.textContent = "Preview failed (" + response.status + "): " + body.slice(0, 300);
      } else {
        preview.innerHTML = body;  // the server's fragment: every feed or rule text escaped
      }
      numberLines();
    } catch (error) {
      if (error.name !== "AbortError") preview.textContent = "Preview failed: " + error;
    } finally {
      if (id === sent) preview.removeAttribute("aria-busy");
    }
  }

  function later() {
    numberLines();
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  }

  text.addEventListener("input", later);
  text.addEventListener("scroll", function () { gutter.scrollTop = text.scrollTop; });
  text.addEventListener("keydown", function (event) {
    if (event.key === "Tab" && !event.shiftKey && !text.readOnly) {  // YAML wants spaces
      event.preventDefault();
      text.setRangeText("  ", text.selectionStart, text.selectionEnd, "end");
      later();
    }
  });
  if (windowSelect) windowSelect.addEventListener("change", refresh);
  numberLines();
})();
