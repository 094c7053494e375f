"""The app's own CSS and JavaScript, served inline: nothing is loaded from the internet."""

CSS = """
/* Gradio's block styles set overflow: visible; without !important the panel overflows the
   window instead of scrolling, and passages below the fold cannot be read */
#sources { max-height: 68vh; overflow-y: auto !important; padding-right: 4px;
  overscroll-behavior: contain; }
#sources .score { cursor: help; text-decoration: underline dotted; }
#sources a.open-original { color: var(--color-accent); white-space: nowrap; }
#original { max-height: 68vh; overflow-y: auto !important; }
#original .original-head { font-size: 0.85em; color: var(--body-text-color-subdued);
  margin-bottom: 0.5em; }
#original .original-text { white-space: pre-wrap; font-size: 0.92em; line-height: 1.45;
  overflow-wrap: anywhere; }
#original .passage-here { background: #fef3c7; outline: 2px solid #f59e0b;
  border-radius: 3px; }
#original mark { background: #fde68a; color: #111; }
#original .cut { color: var(--body-text-color-subdued); font-style: italic; }
#original img.original-page { width: 100%; height: auto; border: 1px solid
  var(--border-color-primary); }
#sources .file { font-size: 0.9em; }
#sources .empty { color: var(--body-text-color-subdued); padding: 1em 0.25em; }
#sources details.turn { margin-bottom: 0.75em; }
#sources details.turn > summary { cursor: pointer; font-weight: 600; padding: 0.25em 0;
  color: var(--body-text-color-subdued); }
#sources details.turn[open] > summary { color: var(--body-text-color); }
#sources article.src { border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: 0.6em 0.75em; margin: 0.5em 0; background: var(--background-fill-secondary);
  scroll-margin-top: 1em; transition: box-shadow 0.3s, border-color 0.3s; }
#sources article.src.flash { border-color: var(--color-accent); box-shadow: 0 0 0 3px
  var(--color-accent-soft); }
#sources article.src header { font-size: 0.85em; color: var(--body-text-color-subdued);
  margin-bottom: 0.35em; overflow-wrap: anywhere; }
#sources article.src header b { color: var(--body-text-color); }
#sources article.src .n { font-weight: 700; color: var(--color-accent); }
/* a long URL breaks instead of pushing the passage out of its card */
#sources .passage { white-space: pre-wrap; font-size: 0.92em; line-height: 1.45;
  overflow-wrap: anywhere; }
/* a table in a passage scrolls sideways in its own box, not the whole panel, its words whole
   (Gradio breaks table words anywhere: "C|at|e|g|or|y") */
#sources .passage table { display: block; max-width: 100%; overflow-x: auto; }
#sources .passage :is(th, td) { overflow-wrap: normal; word-break: normal; }
#sources .passage.md { white-space: normal; }
#sources .passage.md > :first-child { margin-top: 0; }
#sources .passage.md h1, #sources .passage.md h2, #sources .passage.md h3 { font-size: 1.05em; }
#sources mark { background: #fde68a; color: #111; padding: 0 1px; border-radius: 2px; }
#sources blockquote { margin: 0.3em 0; font-style: italic; }
#sources .note { font-size: 0.85em; color: var(--body-text-color-subdued); margin: 0.2em 0; }
#sources .refusal { font-weight: 700; font-size: 1.05em; }
#sources .warning, #sources .unsupported { color: #b45309; }
#chat a.cite { text-decoration: none; font-weight: 600; color: var(--color-accent);
  cursor: pointer; }
#chat a.cite:hover { text-decoration: underline; }
.status-table th { text-align: left; font-weight: 600; padding-right: 2em; white-space: nowrap; }
.status-table th, .status-table td { border: none !important;
  border-bottom: 1px solid var(--border-color-primary) !important; }
.llm-status p { margin: 0; font-size: 0.9em; }
.ok { color: #15803d; } .bad { color: #b91c1c; }
#ask-row { align-items: stretch; }
footer { display: none !important; }
#confirm-delete { flex-wrap: wrap; align-items: center; }
#confirm-delete #confirm-text { min-width: 240px; flex: 1 1 240px; }
#back-to-question { position: fixed; right: 12px; bottom: 12px; z-index: 50;
  padding: 0.55em 0.9em; border-radius: 999px; border: none; font-weight: 600;
  background: var(--button-primary-background-fill); color: var(--button-primary-text-color);
  box-shadow: 0 2px 8px rgba(0, 0, 0, 0.25); cursor: pointer; }
@media (max-width: 640px) {
  #sources { max-height: none; padding-bottom: 3.5em; }  /* room above the back button */
  #header { padding-left: 1.6em; }
  /* the app clips what is wider than the window: a table scrolls in its own box instead,
     its words whole ("112|0") */
  .prose table { display: block; max-width: 100%; overflow-x: auto; }
  .prose :is(th, td) { overflow-wrap: normal; word-break: normal; }
  .status-table th { white-space: normal; }
  .status-table code { overflow-wrap: anywhere; }  /* a long index path */
  /* the metrics' column widths are shares of the table's width: at 390 px a value column
     is 40 px, so the table keeps a readable width and scrolls */
  :is(#eval-metrics, #eval-failures) .upload-container { overflow-x: auto !important; }
  :is(#eval-metrics, #eval-failures) .virtual-table-viewport { min-width: 720px; }
}
"""

# Citation links jump to their passage: show the Sources tab (the Original may be on top),
# open its folded answer, scroll, flash it. Listening on the document (capture phase) works
# for messages rendered at any time.
HEAD = """
<script>
document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest('a[href^="#src-"]');
  if (!link) return;
  event.preventDefault();
  event.stopPropagation();
  const target = document.getElementById(link.getAttribute("href").slice(1));
  if (!target) return;
  const fold = target.closest("details");
  if (fold) fold.open = true;
  if (!target.getClientRects().length) {  // behind the Original tab: a passage of no size
    const tab = document.querySelector('button[role="tab"][data-tab-id="sources-tab"]');
    if (tab) tab.click();
  }
  let tries = 20;  // the tab is drawn a frame or two after the click
  const jump = () => {
    if (!target.getClientRects().length && tries-- > 0) return requestAnimationFrame(jump);
    // the highlighted words, not the top of a long passage; inside the Sources panel when it
    // scrolls (wide windows), so the title, the tabs and the question box stay where they are
    const goal = target.querySelector("mark") || target;
    const panel = document.getElementById("sources");
    if (panel && panel.contains(goal) && panel.scrollHeight > panel.clientHeight + 1) {
      const top = goal.getBoundingClientRect().top - panel.getBoundingClientRect().top
        + panel.scrollTop - panel.clientHeight / 3;
      panel.scrollTo({top: Math.max(0, top), behavior: "smooth"});
    } else if (!onScreen(goal)) {  // a phone: the page scrolls, away from the question box
      goal.scrollIntoView({behavior: "smooth", block: "center"});
      backToQuestion();
    }
    target.classList.add("flash");
    setTimeout(() => target.classList.remove("flash"), 1600);
  };
  jump();
}, true);

function onScreen(el) {
  const r = el.getBoundingClientRect();
  return r.top >= 0 && r.bottom <= innerHeight;
}

// "Back to the question": shown after a jump down the page, gone once the question box is
// on screen again (by the button or by scrolling)
let back = null, away = false;
function backToQuestion() {
  const question = document.getElementById("question");
  if (!back && question) {
    back = document.createElement("button");
    back.id = "back-to-question";
    back.type = "button";
    back.textContent = "↑ Back to the question";
    back.addEventListener("click", () => {
      question.scrollIntoView({behavior: "smooth", block: "end"});
    });
    new IntersectionObserver(([seen]) => {
      if (!seen.isIntersecting) away = true;
      else if (away) back.hidden = true;
    }).observe(question);
    document.querySelector(".gradio-container").appendChild(back);
  }
  if (!back) return;
  away = !onScreen(question);
  back.hidden = false;
}

// "open the original": the passage's request to the server, through a hidden textbox
document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a.open-original");
  if (!link) return;
  event.preventDefault();
  event.stopPropagation();
  const box = document.querySelector("#open-request textarea, #open-request input");
  if (!box) return;
  // a nonce, so opening the same passage twice is still a change
  const request = JSON.parse(link.dataset.open);
  request.nonce = Date.now();
  box.value = JSON.stringify(request);
  box.dispatchEvent(new Event("input", {bubbles: true}));
}, true);

// once the original is shown, bring the passage into view inside its panel
new MutationObserver(() => {
  const here = document.getElementById("passage-here");
  const panel = document.getElementById("original");
  if (!here || !panel || here.dataset.shown) return;
  here.dataset.shown = "1";
  panel.scrollTop += here.getBoundingClientRect().top - panel.getBoundingClientRect().top
    - panel.clientHeight / 4;
}).observe(document.documentElement, {childList: true, subtree: true});

// a narrow window starts with the settings folded away, not covering the chat
const foldSettings = setInterval(() => {
  const toggle = document.querySelector("#settings .toggle-button");
  if (!toggle) return;
  clearInterval(foldSettings);
  if (window.innerWidth < 768 && document.querySelector("#settings.open")) toggle.click();
}, 100);
</script>
"""

# The copy button: the answer as Markdown to the clipboard, with a fallback for plain http.
COPY_JS = """
(markdown) => {
  const button = document.getElementById("copy");
  const done = (label) => {
    if (!button) return;
    const old = button.textContent;
    button.textContent = label;
    setTimeout(() => { button.textContent = old; }, 1500);
  };
  if (!markdown) { done("Nothing to copy yet"); return []; }
  const fallback = () => {
    const area = document.createElement("textarea");
    area.value = markdown;
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    done(ok ? "Copied ✓" : "Copy failed");
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(markdown).then(() => done("Copied ✓"), fallback);
  } else {
    fallback();
  }
  return [];
}
"""
