// Drives the rowsync admin UI in Debian's Chromium (headless): log in, see both targets with
// positions and lag, add a mapping of product.batch to the purchase target through the form,
// pause and resume a target. Screenshots go to the directory given; any failure exits 1.
// Usage: node ui.mjs <base url> <user> <password> <screenshot dir> [chromium|firefox]
// Firefox is Debian's firefox-esr driven over WebDriver BiDi (playwright's `moz-firefox`
// channel): no browser is downloaded.
import { chromium, firefox } from "playwright-core";

const [base, user, password, shots, which = "chromium"] = process.argv.slice(2);
const browser = which === "firefox"
  ? await firefox.launch({ channel: "moz-firefox", executablePath: "/usr/bin/firefox-esr", headless: true })
  : await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
let step = 0;
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const shot = async (name) => page.screenshot({ path: `${shots}/${which}-${String(++step).padStart(2, "0")}-${name}.png`, fullPage: true });
page.on("dialog", (d) => d.accept());
try {
  await page.goto(base + "/");
  await page.fill("input[name=user]", user);
  await page.fill("input[name=password]", password);
  await page.click("#login-form button[type=submit]");
  for (const name of ["order", "purchase"]) {
    const card = page.locator(`.target[data-name="${name}"]`);
    await card.locator(".state.streaming").waitFor({ timeout: 60000 });
    await card.getByText(/\.\d+:\d+/).first().waitFor();
  }
  await page.locator("#source-line", { hasText: "connected; head" }).waitFor();
  await shot("overview");

  await page.click("nav a[data-page=mappings]");
  await page.locator("#mapping-rows tr").first().waitFor();
  await page.click("#new-mapping");
  await page.selectOption("#mapping-form select[name=source]", "product.batch");
  await page.locator("#column-boxes input[value=batch_no][disabled]").waitFor();
  await page.check('#target-boxes input[value="purchase"]');
  await page.fill("#mapping-form input[name=where]", "qty = = 1");
  await page.click("#preview-button");
  await page.locator("#mapping-error", { hasText: "mappings[1].where" }).waitFor();
  await shot("filter-error");
  await page.fill("#mapping-form input[name=where]", "");
  await page.click("#preview-button");
  await page.locator("#preview", { hasText: "purchase" }).waitFor();
  await shot("preview");
  await page.click("#save-button");
  await page.locator('#mapping-rows tr[data-id="product.batch"]').waitFor();
  await shot("mapping-saved");

  await page.click("nav a[data-page=overview]");
  const order = page.locator('.target[data-name="order"]');
  await order.locator('button[data-action="pause"]').click();
  await order.locator(".state.paused").waitFor();
  await shot("paused");
  await order.locator('button[data-action="resume"]').click();
  await order.locator(".state.streaming").waitFor({ timeout: 60000 });
  await page.setViewportSize({ width: 390, height: 844 });
  await shot("phone");
  await page.click("nav a[data-page=audit]");
  await page.locator("#audit-rows tr", { hasText: "mapping.create" }).waitFor();
  await shot("audit");
  console.log("ui: ok");
} catch (e) {
  await shot("failure").catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
