// The status page's only script (gateway/runtime/status.py): replace the page's content with a fresh
// rendering every data-refresh seconds, from the same URL (relative, so it works behind a reverse proxy).
// No framework, no third-party code, no request to anywhere but the page's own origin and path.
"use strict";
(function () {
  var body = document.body;
  var seconds = parseInt(body.getAttribute("data-refresh"), 10);
  var lang = body.getAttribute("data-lang") || "en";
  if (!(seconds > 0)) {
    return;
  }
  function refresh() {
    fetch("?fragment=1&lang=" + encodeURIComponent(lang), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" }
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        document.getElementById("content").innerHTML = html;
        body.removeAttribute("data-stale");
      })
      .catch(function () {
        body.setAttribute("data-stale", "true"); // shown by the stylesheet; the next refresh tries again
      });
  }
  window.setInterval(refresh, seconds * 1000);
})();
