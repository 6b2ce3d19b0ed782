// recond's upload page: send each picture on its own (so each has its own upload progress), then
// follow its job until it is done, failed or a duplicate. The page keeps its list in
// localStorage, so a reload or Back shows the same uploads; one event stream (/api/events)
// serves every row, since a browser opens only six connections to one server.
"use strict";

const STORAGE_KEY = "recond.uploads";
const KEPT_UPLOADS = 30;
const STATUS_POLL_MS = 4000;
const ETA_SMOOTHING = 0.3;    // weight of the newest estimate of the finishing time
const ALMOST_DONE_S = 10;     // below this, no number: "a few seconds left", never "0 s"
const UPLOADED = /^(?:[^/]+\/)?web\/([0-9a-f]{16})-/;  // under a preset's folder too (names.py)

const rows = new Map();       // upload id -> its row (an <li>)
let events = null;            // the one EventSource, open while some row is unfinished
let daemon = null;            // the last /api/status "daemon" part

function formatSeconds(seconds) {
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function timeLeft(row) {
  const left = row.finishAt - Date.now() / 1000;
  if (left < ALMOST_DONE_S) return "a few seconds left";
  if (left < 90) return `about ${Math.ceil(left / 5) * 5} s left`;
  return `about ${Math.round(left / 60)} min left`;
}

function addRow(name) {
  const row = document.createElement("li");
  row.className = "card";
  row.innerHTML = '<div class="row"><span class="name"></span><span class="status facts"></span></div>' +
    '<progress max="100" value="0"></progress><div class="outcome"></div>';
  row.querySelector(".name").textContent = name;
  document.getElementById("uploads").prepend(row);
  return row;
}

function show(row, state, text, percent) {
  row.dataset.state = state;
  row.querySelector(".status").textContent = text;
  if (percent !== undefined) row.querySelector("progress").value = percent;
}

function outcome(row, element) {
  row.querySelector(".outcome").replaceChildren(element);
}

function unfinished(row) {
  return ["pending", "uploading", "waiting", "queued", "running"].includes(row.dataset.state);
}

function waitingText() {
  if (daemon && !daemon.running) return "waiting: recond is not running (it will take it when it starts)";
  return "waiting for recond to take it";
}

function queuedText(job) {
  const place = !job.queue_position ? "queued"
    : job.queue_position === 1 ? "queued: next in line" : `queued: ${job.queue_position - 1} ahead of it`;
  if (daemon && !daemon.running) return `${place} · recond is not running`;
  if (daemon && daemon.model === "missing") return `${place} · recond has no model`;
  if (daemon && daemon.model && daemon.model !== "ready") return `${place} · recond is loading its model`;
  return place;
}

function showJob(row, job) {
  if ((row.updatedAt || 0) > (job.updated_at || 0)) return;  // an older answer arriving late
  row.updatedAt = job.updated_at || 0;
  row.dataset.job = job.id;
  row.job = job;
  if (job.state === "running") {
    row.seenAt = Date.now() / 1000;
    if (job.eta_s !== null && job.eta_s !== undefined) {
      const finish = row.seenAt + job.eta_s;
      row.finishAt = row.finishAt === undefined ? finish : row.finishAt + ETA_SMOOTHING * (finish - row.finishAt);
    }
    row.dataset.state = "running";
    showRunning(row);
  } else if (job.state === "queued") {
    show(row, "queued", queuedText(job), 0);
  } else if (job.state === "done" || job.state === "duplicate") {
    const taken = job.finished_at && job.started_at ? ` in ${formatSeconds(job.finished_at - job.started_at)}` : "";
    show(row, job.state, job.state === "done" ? `done${taken}` : "already made from the same picture", 100);
    const link = document.createElement("a");
    link.href = job.result_url;
    link.textContent = "View the 3D result";
    outcome(row, link);
  } else if (job.state === "failed") {
    show(row, "failed", "failed");
    const error = document.createElement("span");
    error.className = "error";
    error.textContent = job.shown_error || "the job failed";
    outcome(row, error);
  }
}

// A stage can run long with no progress of its own (the reconstruction is one pass of the
// model), so between events the bar moves on towards the smoothed finishing time, never past
// 99 % and never back.
function showRunning(row) {
  const job = row.job;
  const reported = job.progress || 0;
  const span = row.finishAt - row.seenAt;
  const guess = span > 0 ? reported + (1 - reported) * (Date.now() / 1000 - row.seenAt) / span : reported;
  const percent = Math.min(99, Math.round(Math.max(reported, guess) * 100));
  const bar = row.querySelector("progress");
  bar.value = Math.max(bar.value, percent);
  const eta = row.finishAt !== undefined ? ` · ${timeLeft(row)}` : "";
  row.querySelector(".status").textContent = `${job.stage_words || "starting"} · ${bar.value}%${eta}`;
}

// Where each upload stands: asked once per row, then kept current by the event stream.
async function refresh(uploadId) {
  const row = rows.get(uploadId);
  const answer = await fetch(`/api/uploads/${uploadId}`);
  if (answer.status === 404) {
    show(row, "gone", "no longer in recond's inbox (removed before it became a job)");
    forget(uploadId);
    return;
  }
  if (!answer.ok) return;
  const upload = await answer.json();
  if (upload.job) showJob(row, upload.job);
  else show(row, "waiting", waitingText(), 0);
}

function listen() {
  const needed = [...rows.values()].some(unfinished);
  if (needed && !events) {
    events = new EventSource("/api/events");
    events.addEventListener("job", (message) => {
      const job = JSON.parse(message.data);
      const match = UPLOADED.exec(job.source);
      const row = match && rows.get(match[1]);
      if (row) {
        showJob(row, job);
        if (job.state === "queued") refresh(match[1]);  // its place in the queue
      }
      if (job.state !== "queued") {  // the queue moved: the queued rows' places changed
        for (const [id, other] of rows) if (other !== row && other.dataset.state === "queued") refresh(id);
      }
      listen();
    });
  } else if (!needed && events) {
    events.close();
    events = null;
  }
}

// The daemon's state, shown above the list while something is unfinished.
async function watchDaemon() {
  if ([...rows.values()].some(unfinished)) {
    try {
      const status = await (await fetch("/api/status")).json();
      daemon = status.daemon;
    } catch (error) {
      daemon = null;
    }
    const notice = document.getElementById("notice");
    notice.textContent = daemonNotice();
    notice.hidden = !notice.textContent;
    for (const [id, row] of rows) {
      if (row.dataset.state === "waiting") refresh(id);
      else if (row.dataset.state === "queued") show(row, "queued", queuedText(row.job));
    }
  }
  setTimeout(watchDaemon, STATUS_POLL_MS);
}

function daemonNotice() {
  if (!daemon) return "";
  if (!daemon.running) {
    return daemon.unresponsive ? "recond is not answering: your photos wait in its inbox."
      : "recond is not running: your photos wait safely in its inbox and start when it does.";
  }
  if (daemon.model === "missing") return `recond cannot load its model: ${daemon.model_detail || "see reconctl status"}.`;
  if (daemon.model && daemon.model !== "ready") {
    const detail = daemon.model_detail ? ` (${daemon.model_detail})` : "";
    return `recond is loading its model${detail}: jobs start when it is ready.`;
  }
  return "";
}

// The uploads of this browser, newest first, kept across reloads.
function remembered() {
  try { return JSON.parse(localStorage.getItem(STORAGE_KEY)) || []; } catch (error) { return []; }
}

function remember(upload) {
  const kept = remembered().filter((item) => item.upload_id !== upload.upload_id);
  kept.unshift({ upload_id: upload.upload_id, name: upload.name });
  localStorage.setItem(STORAGE_KEY, JSON.stringify(kept.slice(0, KEPT_UPLOADS)));
}

function forget(uploadId) {
  localStorage.setItem(STORAGE_KEY, JSON.stringify(remembered().filter((item) => item.upload_id !== uploadId)));
}

function follow(row, upload) {
  rows.set(upload.upload_id, row);
  show(row, "waiting", waitingText(), 0);
  listen();
  refresh(upload.upload_id).then(listen);
}

// Two uploads at a time from this page; the rest wait their turn (the server also limits how
// many it receives at once, web_max_uploads, and answers 429 with Retry-After beyond that).
const PARALLEL_UPLOADS = 2;
const queue = [];
let sending = 0;

function enqueue(file) {
  const row = addRow(file.name);
  show(row, "pending", "waiting to upload");
  queue.push({ file, row });
  pump();
}

function pump() {
  while (sending < PARALLEL_UPLOADS && queue.length) {
    const { file, row } = queue.shift();
    sending += 1;
    send(file, row, () => { sending -= 1; pump(); });
  }
}

function send(file, row, finished) {
  const form = new FormData();
  const preset = document.getElementById("upload-preset");
  if (preset && preset.value) form.append("preset", preset.value);
  form.append("image", file, file.name);
  const request = new XMLHttpRequest();
  request.open("POST", "/api/jobs");
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) show(row, "uploading", `uploading ${Math.round((event.loaded / event.total) * 100)}%`);
  });
  request.addEventListener("load", () => {
    let answer = {};
    try { answer = JSON.parse(request.responseText); } catch (error) { /* shown below */ }
    if (request.status === 202) {
      remember(answer.uploads[0]);
      follow(row, answer.uploads[0]);
    } else if (request.status === 429) {
      const seconds = Number(request.getResponseHeader("Retry-After")) || 1;
      show(row, "pending", "server busy: retrying");
      setTimeout(() => { queue.unshift({ file, row }); pump(); }, seconds * 1000);
    } else {
      show(row, "refused", `refused (${request.status})`);
      const error = document.createElement("span");
      error.className = "error";
      error.textContent = answer.detail || request.statusText;
      outcome(row, error);
    }
    finished();
  });
  request.addEventListener("error", () => {
    show(row, "refused", "upload failed: the connection broke");
    finished();
  });
  show(row, "uploading", "uploading");
  request.send(form);
}

const drop = document.getElementById("drop");
const pick = document.getElementById("pick");
pick.addEventListener("change", () => { [...pick.files].forEach(enqueue); pick.value = ""; });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  [...event.dataTransfer.files].forEach(enqueue);
});

// The time left counts down between events.
setInterval(() => { for (const row of rows.values()) if (row.dataset.state === "running" && row.job) showRunning(row); }, 1000);

for (const upload of remembered().reverse()) follow(addRow(upload.name), upload);
watchDaemon();
