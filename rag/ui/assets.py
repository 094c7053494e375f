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
#original .original-text { white-space: pre-wrap; font-size: 0.92em; line-height: 1.45; }
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
#sources .passage { white-space: pre-wrap; font-size: 0.92em; line-height: 1.45; }
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
@media (max-width: 640px) { #sources { max-height: none; } #header { padding-left: 1.6em; } }
"""

# Citation links jump to their passage: open its folded answer, scroll, flash it.
# Listening on the document (capture phase) works for messages rendered at any time.
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
  // the highlighted words, not the top of a long passage; inside the Sources panel when it
  // scrolls (wide windows), so the title, the tabs and the question box stay where they are
  const goal = target.querySelector("mark") || target;
  const panel = document.getElementById("sources");
  if (panel && panel.contains(goal) && panel.scrollHeight > panel.clientHeight + 1) {
    const top = goal.getBoundingClientRect().top - panel.getBoundingClientRect().top
      + panel.scrollTop - panel.clientHeight / 3;
    panel.scrollTo({top: Math.max(0, top), behavior: "smooth"});
  } else {
    goal.scrollIntoView({behavior: "smooth", block: "center"});
  }
  target.classList.add("flash");
  setTimeout(() => target.classList.remove("flash"), 1600);
}, true);

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
