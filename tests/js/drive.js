// Drives a browser with puppeteer-core through a CDP WebSocket URL:
// node drive.js <browserWSEndpoint> <page URL> <screenshot path>
// Prints {status, title, text} of the page after clicking its #go button twice.
const puppeteer = require("puppeteer-core");

(async () => {
  const [endpoint, url, shot] = process.argv.slice(2);
  const browser = await puppeteer.connect({ browserWSEndpoint: endpoint, defaultViewport: { width: 800, height: 600 } });
  const page = await browser.newPage();
  const response = await page.goto(url);
  await page.click("#go");
  await page.click("#go");
  const text = await page.$eval("#out", (el) => el.textContent);
  await page.screenshot({ path: shot });
  console.log(JSON.stringify({ status: response.status(), title: await page.title(), text }));
  await page.close();
  await browser.disconnect();
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
