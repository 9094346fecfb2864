// Draws the book's charts without the network.
//
// Each chart in a built page is <div class="ioi-chart"><script type="application/json">SPEC
// </script></div> (written by ioi_helpers.plots.chart_html). vegaEmbed comes from
// _static/vega-bundle.js, which the pipeline generates next to this file from the pinned
// vl-convert-python package. A chart that fails to draw shows the error in its place and
// carries class "ioi-chart-error", which the headless-browser test looks for.
(function () {
  "use strict";

  function fail(div, message) {
    div.classList.add("ioi-chart-error");
    var pre = document.createElement("pre");
    pre.textContent = "This chart could not be drawn: " + message;
    div.appendChild(pre);
  }

  function draw(div) {
    var source = div.querySelector('script[type="application/json"]');
    if (!source || div.dataset.ioiChart) return;
    div.dataset.ioiChart = "pending";
    if (typeof window.vegaEmbed !== "function") {
      fail(div, "the Vega bundle (_static/vega-bundle.js) is not loaded");
      return;
    }
    var target = document.createElement("div");
    div.appendChild(target);
    var spec;
    try {
      spec = JSON.parse(source.textContent);
    } catch (err) {
      fail(div, "its spec is not valid JSON (" + err + ")");
      return;
    }
    window
      .vegaEmbed(target, spec, { renderer: "svg", actions: false })
      .then(function () { div.dataset.ioiChart = "drawn"; })
      .catch(function (err) { fail(div, String(err)); });
  }

  function drawAll() {
    document.querySelectorAll("div.ioi-chart").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
