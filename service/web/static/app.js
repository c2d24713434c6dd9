// collapsewatch web page: reads the REST API (/api/v1) and draws SVG by hand.
// No framework, no build step, no network access beyond this server: ES modules in js/.
import { start } from "./js/page.js";
import "./js/deeplink.js";

start();
