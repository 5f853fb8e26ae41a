// gen_assets review page: keyboard shortcuts, and ratings sent without leaving the page.
// Without this script every control still works: the forms post and the server redirects back.
(function () {
  "use strict";
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  if (!cards.length) return;
  var current = 0;

  function focusCard(i) {
    current = Math.max(0, Math.min(cards.length - 1, i));
    cards.forEach(function (c, k) { c.classList.toggle("current", k === current); });
    cards[current].focus();
    cards[current].scrollIntoView({ block: "nearest" });
  }

  function cardOf(el) { return el && el.closest ? el.closest(".card") : null; }

  function say(form, text, isError) {
    var out = form.querySelector(".result");
    out.textContent = text;
    out.classList.toggle("error", !!isError);
  }

  function setWaiting(n) {
    var el = document.getElementById("waiting-count");
    if (el && typeof n === "number") el.textContent = String(n);
  }

  // rating: value 1-5 (a thumb submits through its own button)
  function send(form, button) {
    var body = new URLSearchParams(new FormData(form, button || undefined));
    if (!body.get("rating") && !body.get("thumb")) {
      say(form, "Choose a rating first: press 1 to 5, u or d.", true);
      return;
    }
    say(form, "Sending…", false);
    fetch(form.action, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (res) {
      return res.json().then(function (data) { return { ok: res.ok, data: data }; });
    }).then(function (r) {
      if (!r.ok) { say(form, r.data.error || "The rating was refused.", true); return; }
      form.elements.nonce.value = r.data.next_nonce;  // the next rating of this card is a new one
      form.elements.comment.value = "";
      say(form, "Rated " + r.data.rating + (r.data.replayed ? " (already landed)" : "") + ". Thank you.", false);
      cardOf(form).classList.add("rated");
      setWaiting(r.data.ratings_waiting);
      if (cards.indexOf(cardOf(form)) === current) focusCard(current + 1);
    }).catch(function () {
      say(form, "The page could not reach the server; nothing was lost, try again.", true);
    });
  }

  function rate(card, value) {
    var form = card.querySelector("form.rate");
    if (!form) return;
    var radio = form.querySelector('input[name="rating"][value="' + value + '"]');
    if (radio) radio.checked = true;
    send(form, null);
  }

  function thumb(card, which) {
    var form = card.querySelector("form.rate");
    if (!form) return;
    var radio = form.querySelector('input[name="rating"][value="' + (which === "up" ? 5 : 1) + '"]');
    if (radio) radio.checked = true;  // shows what the thumb means
    send(form, form.querySelector('button[name="thumb"][value="' + which + '"]'));
  }

  document.querySelectorAll("form.rate").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = event.submitter && event.submitter.name === "thumb" ? event.submitter : null;
      if (button) thumb(cardOf(form), button.value);
      else send(form, null);
    });
  });

  cards.forEach(function (card, i) {
    card.addEventListener("focusin", function () {
      current = i;
      cards.forEach(function (c, k) { c.classList.toggle("current", k === i); });
    });
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    var card = cardOf(target) || cards[current];
    if (target.tagName === "TEXTAREA") {
      if (event.key === "Escape") { event.preventDefault(); card.focus(); }
      else if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); send(target.form, null); }
      return;
    }
    if (target.tagName === "INPUT" && target.type !== "radio") return;  // e.g. the token field
    var key = event.key;
    if (key >= "1" && key <= "5") { event.preventDefault(); rate(card, key); }
    else if (key === "u") { event.preventDefault(); thumb(card, "up"); }
    else if (key === "d") { event.preventDefault(); thumb(card, "down"); }
    else if (key === "Enter" && target === card) {
      var form = card.querySelector("form.rate");
      if (form) { event.preventDefault(); send(form, null); }
    }
    else if (key === "c") {
      var box = card.querySelector("textarea");
      if (box) { event.preventDefault(); box.focus(); }
    }
    else if (key === "j" || key === "ArrowRight" || key === "ArrowDown") {
      if (target.type === "radio") return;  // arrows move within the rating scale
      event.preventDefault(); focusCard(cards.indexOf(card) + 1);
    }
    else if (key === "k" || key === "ArrowLeft" || key === "ArrowUp") {
      if (target.type === "radio") return;
      event.preventDefault(); focusCard(cards.indexOf(card) - 1);
    }
  });

  // back from a rating posted without the script (#card-<id>), else the first sample
  var start = location.hash ? document.getElementById(decodeURIComponent(location.hash.slice(1))) : null;
  var startIndex = cards.indexOf(start);
  if (!document.querySelector("#token")) focusCard(startIndex >= 0 ? startIndex : 0);
})();
