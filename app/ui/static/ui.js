// The dashboard works without this file; with it, the list's counts stay current and a
// checkbox selects a whole page of dead letters.
(function () {
  "use strict";
  var REFRESH_MS = 10000;

  function refreshCounts(tabs) {
    if (document.hidden) return;
    fetch(tabs.getAttribute("data-live-counts"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (!body || !body.counts) return;
        var total = 0, more = false;
        Object.keys(body.counts).forEach(function (status) {
          var text = body.counts[status];
          var cell = tabs.querySelector('[data-count="' + status + '"]');
          if (cell) cell.textContent = text;
          total += parseInt(text.replace(/[,+]/g, ""), 10) || 0;
          more = more || text.indexOf("+") >= 0;
        });
        var all = tabs.querySelector('[data-count="all"]');
        if (all) all.textContent = total.toLocaleString("en-US") + (more ? "+" : "");
      })
      .catch(function () { /* the next round tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var tabs = document.querySelector("[data-live-counts]");
    if (tabs) {
      setInterval(function () { refreshCounts(tabs); }, REFRESH_MS);
      document.addEventListener("visibilitychange", function () { refreshCounts(tabs); });
    }
    var all = document.querySelector("[data-select-all]");
    if (all) {
      var boxes = document.querySelectorAll('input[type="checkbox"][name="key"]');
      all.addEventListener("change", function () {
        boxes.forEach(function (box) { box.checked = all.checked; });
      });
    }
  });
})();
