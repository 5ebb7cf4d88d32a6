"use strict";
// The copy button of the "token issued" page: a static file, so the page needs no
// inline script under the site's Content-Security-Policy.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const id = button.dataset.copyTarget;
  const input = document.getElementById(id);
  const status = document.querySelector(`[data-copy-status="${id}"]`);
  input.select();
  let copied = false;
  try {
    await navigator.clipboard.writeText(input.value);
    copied = true;
  } catch {
    // Plain HTTP (no secure context) has no clipboard API: the selected text can still
    // be copied with Ctrl+C.
    copied = document.execCommand && document.execCommand("copy");
  }
  if (status) status.textContent = copied ? "Copied." : "Selected: press Ctrl+C to copy.";
});
