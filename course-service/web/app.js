// The MicroCourses page: the course list with search, filters and paging, and an admin mode
// (token entered once per tab) to add, edit and delete. Plain DOM, no framework; every value
// from the API is inserted as text, never as markup.
"use strict";

const API = "/api/courses";
const TOKEN_KEY = "mc-admin-token";
const FILTERS = ["q", "level", "tag", "sort", "page"];

const $ = (id) => document.getElementById(id);
// `loads` numbers each list fetch, so an older answer arriving late never overwrites a newer.
const state = { page: null, editing: null, loads: 0 };

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// The query of the list, from the address bar: reload and shared links show the same page.
function currentQuery() {
  const from = new URLSearchParams(location.search);
  const query = new URLSearchParams();
  for (const name of FILTERS) {
    const value = (from.get(name) || "").trim();
    if (value !== "") query.set(name, value);
  }
  return query;
}

function showQueryInForm(query) {
  $("q").value = query.get("q") || "";
  $("level").value = query.get("level") || "";
  $("tag").value = query.get("tag") || "";
  $("sort").value = query.get("sort") || "-created_at";
}

function navigate(query) {
  const search = query.toString();
  history.pushState(null, "", search ? `?${search}` : location.pathname);
  load();
}

// What a failed answer says, for a person: the problem's detail, else the status line.
async function problemOf(res) {
  try {
    const body = await res.json();
    return { detail: body.detail || `${res.status} ${res.statusText}`, errors: body.errors || [] };
  } catch {
    return { detail: `${res.status} ${res.statusText}`, errors: [] };
  }
}

async function load() {
  const query = currentQuery();
  const mine = ++state.loads;
  showQueryInForm(query);
  setStatus("Loading…");
  let res;
  let listing;
  try {
    res = await fetch(`${API}?${query}`, { headers: { accept: "application/json" } });
    listing = res.ok ? await res.json() : null;
  } catch {
    if (mine === state.loads) {
      setStatus("The catalogue cannot be reached; check your connection and try again.", true);
    }
    return;
  }
  if (mine !== state.loads) return;
  if (!res.ok) {
    const problem = await problemOf(res);
    setStatus(problem.detail, true);
    return;
  }
  // Past the last page (its last course was just deleted, or an old link): show the last one.
  if (listing.items.length === 0 && listing.total > 0 && listing.page > listing.pages) {
    query.set("page", String(listing.pages));
    history.replaceState(null, "", `?${query}`);
    load();
    return;
  }
  state.page = listing;
  render(listing);
  showSuggestion(query, listing.suggestion);
  const stale = res.headers.get("x-cache") === "STALE";
  const count = listing.total === 1 ? "1 course" : `${listing.total} courses`;
  setStatus(stale ? `${count} (the catalogue is catching up; this list may be a little old)` : count);
}

function render(listing) {
  const list = $("courses");
  list.replaceChildren(...listing.items.map(card));
  const pager = $("pager");
  pager.hidden = listing.pages <= 1;
  $("page-info").textContent = `Page ${listing.page} of ${listing.pages}`;
  $("prev").disabled = !listing.links.prev;
  $("next").disabled = !listing.links.next;
}

// A search that found nothing: the one the API suggests instead (misspelt words corrected),
// as a link to that listing.
function showSuggestion(query, suggestion) {
  $("suggestion").hidden = !suggestion;
  if (!suggestion) return;
  const instead = new URLSearchParams(query);
  instead.set("q", suggestion.q);
  instead.delete("page");
  const link = $("suggestion-link");
  link.textContent = suggestion.q;
  link.href = `?${instead}`;
  link.onclick = (event) => {
    event.preventDefault();
    navigate(instead);
  };
  const count = suggestion.total === 1 ? "1 course" : `${suggestion.total} courses`;
  $("suggestion-count").textContent = `(${count})`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function price(cents) {
  return cents === 0 ? "Free" : `$${(cents / 100).toFixed(2)}`;
}

function card(course) {
  const item = el("li", "course");
  item.dataset.id = course.id;
  item.append(el("h2", "title", course.title));
  const meta = el("p", "meta");
  meta.append(
    el("span", "instructor", course.instructor),
    el("span", `level level-${course.level}`, course.level),
    el("span", "duration", `${course.duration_minutes} min`),
    el("span", "price", price(course.price_cents)),
  );
  item.append(meta);
  if (course.description) item.append(el("p", "description", course.description));
  if (course.tags.length) {
    const tags = el("p", "tags");
    for (const tag of course.tags) {
      const button = el("button", "tag", tag);
      button.type = "button";
      button.title = `Courses tagged ${tag}`;
      button.addEventListener("click", () => {
        const query = currentQuery();
        query.set("tag", tag);
        query.delete("page");
        navigate(query);
      });
      tags.append(button);
    }
    item.append(tags);
  }
  if (token()) {
    const actions = el("p", "actions");
    const edit = el("button", "edit", "Edit");
    edit.type = "button";
    edit.addEventListener("click", () => openEditor(course));
    const remove = el("button", "delete", "Delete");
    remove.type = "button";
    remove.addEventListener("click", () => confirmDelete(course, remove));
    actions.append(edit, remove);
    item.append(actions);
  }
  return item;
}

async function send(method, url, body, ifMatch) {
  const headers = { authorization: `Bearer ${token()}`, accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (ifMatch) headers["if-match"] = ifMatch;
  return fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

// A wrong or missing token: leave admin mode and say why.
function checkAuth(res) {
  if (res.status === 401 || res.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    showAdmin();
    setStatus("The admin token was refused; sign in again with the current token.", true);
    return false;
  }
  return true;
}

// Two clicks, not a dialog: the second within a few seconds deletes.
async function confirmDelete(course, button) {
  if (button.dataset.armed !== "yes") {
    button.dataset.armed = "yes";
    button.textContent = "Really delete?";
    setTimeout(() => {
      button.dataset.armed = "";
      button.textContent = "Delete";
    }, 4000);
    return;
  }
  button.disabled = true;
  const res = await send("DELETE", `${API}/${course.id}`);
  if (!checkAuth(res)) return;
  if (res.ok || res.status === 404) {
    setStatus(`Deleted “${course.title}”.`);
    await load();
    setStatus(`Deleted “${course.title}”.`);
  } else {
    button.disabled = false;
    setStatus((await problemOf(res)).detail, true);
  }
}

function openEditor(course) {
  const form = $("editor");
  state.editing = course || null;
  form.reset();
  clearProblems();
  $("editor-title").textContent = course ? `Edit “${course.title}”` : "Add a course";
  if (course) {
    form.elements.title.value = course.title;
    form.elements.instructor.value = course.instructor;
    form.elements.duration_minutes.value = course.duration_minutes;
    form.elements.level.value = course.level;
    form.elements.tags.value = course.tags.join(", ");
    form.elements.price.value = (course.price_cents / 100).toFixed(2);
    form.elements.description.value = course.description;
  }
  form.hidden = false;
  form.elements.title.focus();
}

function closeEditor() {
  $("editor").hidden = true;
  state.editing = null;
}

function clearProblems() {
  const problem = $("editor-problem");
  problem.hidden = true;
  problem.textContent = "";
  for (const node of document.querySelectorAll("#editor .field-error")) node.remove();
  for (const node of document.querySelectorAll("#editor [aria-invalid]")) node.removeAttribute("aria-invalid");
}

function showProblem(problem) {
  const box = $("editor-problem");
  box.textContent = problem.detail;
  box.hidden = false;
  const form = $("editor");
  for (const { field, message } of problem.errors) {
    const input = form.elements[field === "price_cents" ? "price" : field];
    if (!input) continue;
    input.setAttribute("aria-invalid", "true");
    input.closest("label").append(el("span", "field-error", message));
  }
}

function draftFromForm(form) {
  const e = form.elements;
  const number = (v) => (v.trim() === "" ? NaN : Number(v));
  return {
    title: e.title.value,
    instructor: e.instructor.value,
    duration_minutes: Math.trunc(number(e.duration_minutes.value)) || 0,
    level: e.level.value,
    tags: e.tags.value.split(",").map((t) => t.trim()).filter((t) => t !== ""),
    price_cents: Math.round((number(e.price.value) || 0) * 100),
    description: e.description.value,
  };
}

async function save(event) {
  event.preventDefault();
  clearProblems();
  const editing = state.editing;
  const draft = draftFromForm(event.target);
  $("editor-save").disabled = true;
  let res;
  try {
    res = editing
      ? await send("PUT", `${API}/${editing.id}`, draft, `"v${editing.version}"`)
      : await send("POST", API, draft);
  } catch {
    showProblem({ detail: "The catalogue cannot be reached; your change was not saved.", errors: [] });
    return;
  } finally {
    $("editor-save").disabled = false;
  }
  if (!checkAuth(res)) return;
  if (res.status === 412) {
    showProblem({
      detail: "Someone changed this course while you were editing; the form now shows their version. Make your change again and save.",
      errors: [],
    });
    const fresh = await fetch(`${API}/${editing.id}`);
    load();
    if (fresh.ok) {
      const course = await fresh.json();
      const problem = $("editor-problem").textContent;
      openEditor(course);
      showProblem({ detail: problem, errors: [] });
    }
    return;
  }
  if (!res.ok) {
    showProblem(await problemOf(res));
    return;
  }
  const course = await res.json();
  closeEditor();
  await load();
  setStatus(editing ? `Saved “${course.title}”.` : `Added “${course.title}”.`);
}

function showAdmin() {
  const signedIn = token() !== null;
  $("admin-open").hidden = signedIn;
  $("admin-on").hidden = !signedIn;
  $("login").hidden = true;
  if (!signedIn) closeEditor();
  if (state.page) render(state.page);
}

function wire() {
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const name of ["q", "level", "tag", "sort"]) {
      const value = $(name).value.trim();
      if (value !== "" && !(name === "sort" && value === "-created_at")) query.set(name, value);
    }
    navigate(query);
  });
  $("clear").addEventListener("click", () => navigate(new URLSearchParams()));
  const turn = (link) => {
    if (!link) return;
    const query = currentQuery();
    query.set("page", new URL(link, location.href).searchParams.get("page") || "1");
    navigate(query);
  };
  $("prev").addEventListener("click", () => turn(state.page && state.page.links.prev));
  $("next").addEventListener("click", () => turn(state.page && state.page.links.next));
  window.addEventListener("popstate", load);

  $("admin-open").addEventListener("click", () => {
    $("login").hidden = false;
    $("admin-open").hidden = true;
    $("token").focus();
  });
  $("login-cancel").addEventListener("click", showAdmin);
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value === "") return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    showAdmin();
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showAdmin();
  });
  $("add-course").addEventListener("click", () => openEditor(null));
  $("editor").addEventListener("submit", save);
  $("editor-cancel").addEventListener("click", closeEditor);
}

wire();
showAdmin();
load();
