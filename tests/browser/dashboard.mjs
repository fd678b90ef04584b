// Loads xds-server's fleet dashboard in headless Chromium and checks what a person would see:
// the expected number of connected Envoys with their version, request counts that rise after
// the test sends traffic, and no console errors. Driven by tests/e2e/observability.rs:
//
//   node dashboard.mjs --url http://127.0.0.1:PORT/ --nodes 2 --expect-increase 20 \
//     --screenshot PATH [--timeout-ms 45000]
//
// Prints `BASELINE <n>` once the nodes are shown (the test then sends its traffic), then
// `INCREASED <n>`, and exits 0; any failure prints `FAIL <why>` and exits 1.
// Chromium: Debian's /usr/bin/chromium (scripts/test installs it), or $VRATA_CHROMIUM.
import { chromium } from "playwright-core";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback === undefined) throw new Error(`--${name} is required`);
  return fallback;
}

const url = arg("url");
const nodes = Number(arg("nodes"));
const increase = Number(arg("expect-increase"));
const screenshot = arg("screenshot");
const timeout = Number(arg("timeout-ms", "45000"));

const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.VRATA_CHROMIUM || "/usr/bin/chromium",
  // Tests run as root in CI: Chromium's sandbox refuses root.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
let code = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(url, { waitUntil: "load", timeout });

  // The node table: one row per Envoy, each with its version.
  await page.waitForFunction((n) => {
    const rows = [...document.querySelectorAll("#nodes tbody tr[data-node]")];
    return rows.length === n && rows.every((r) => /^envoy \d+\.\d+\.\d+/.test(r.querySelector(".agent")?.textContent ?? ""));
  }, nodes, { timeout });

  const total = () => page.evaluate(() => [...document.querySelectorAll("#nodes tbody tr[data-node] .requests-total")]
    .map((c) => Number(c.textContent.replace(/,/g, "")))
    .reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0));
  const baseline = await total();
  console.log(`BASELINE ${baseline}`);

  await page.waitForFunction(({ want }) => {
    const sum = [...document.querySelectorAll("#nodes tbody tr[data-node] .requests-total")]
      .map((c) => Number(c.textContent.replace(/,/g, ""))).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
    return sum >= want;
  }, { want: baseline + increase }, { timeout, polling: 250 });
  // The route table shows the traffic too.
  await page.waitForSelector("#routes tbody tr[data-name]", { timeout });
  const after = await total();
  console.log(`INCREASED ${after}`);
  const versions = await page.$$eval("#nodes tbody tr[data-node] .agent", (cells) => cells.map((c) => c.textContent));
  console.log(`VERSIONS ${JSON.stringify(versions)}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  if (problems.length) {
    console.log(`FAIL ${problems.join(" | ")}`);
  } else {
    code = 0;
  }
} catch (e) {
  console.log(`FAIL ${e.message.split("\n")[0]} ${problems.join(" | ")}`);
} finally {
  await browser.close();
}
process.exit(code);
