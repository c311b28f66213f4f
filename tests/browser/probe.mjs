// Opens one report.html in headless Chromium (Debian's, driven by playwright-core) and does the steps it is given,
// printing what it saw as JSON. The assertions are the C# tests' (tests/Interp.Tests/Reports/ReportBrowserTests.cs):
// this script only drives the browser and reports, so the expected numbers come from the Parquet tables there.
//
//   node tests/browser/probe.mjs STEPS.json      STEPS = { "page": "/abs/report.html", "steps": [ … ] }
//
// Steps: { "op": "hover" | "click", "selector" }, { "op": "select", "selector", "value" },
//        { "op": "read", "selector" } (every match: text, data-* attributes, computed background colour),
//        { "op": "screenshot", "selector", "file" } (the first match, as PNG).
// Output: { "console": [errors], "requests": [urls other than the page], "results": [one per step] }.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const pageUrl = pathToFileURL(spec.page).href;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],   // CI runs as root, where Chromium's sandbox cannot start
});
const out = { console: [], requests: [], results: [] };
try {
  const context = await browser.newContext({ offline: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("console", m => { if (m.type() === "error") out.console.push(m.text()); });
  page.on("pageerror", e => out.console.push(String(e)));
  page.on("request", r => { if (r.url() !== pageUrl && !r.url().startsWith("data:")) out.requests.push(r.url()); });
  await page.goto(pageUrl, { waitUntil: "load" });
  for (const step of spec.steps) {
    const target = page.locator(step.selector);
    if (await target.count() === 0) { out.results.push({ error: `no element matches ${step.selector}` }); continue; }
    switch (step.op) {
      case "hover": await target.first().hover(); out.results.push({}); break;
      case "click": await target.first().click(); out.results.push({}); break;
      case "select": await target.first().selectOption(step.value); out.results.push({}); break;
      case "screenshot": await target.first().screenshot({ path: step.file }); out.results.push({ file: step.file }); break;
      case "read":
        out.results.push({
          elements: await target.evaluateAll(els => els.map(e => ({
            text: e.textContent.slice(0, 4000),   // a view's section holds its data as text: keep the answer small
            data: Object.fromEntries(Object.entries(e.dataset)),
            background: getComputedStyle(e).backgroundColor,
            visible: e.getClientRects().length > 0,
          }))),
        });
        break;
      default: out.results.push({ error: `unknown step ${step.op}` });
    }
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
