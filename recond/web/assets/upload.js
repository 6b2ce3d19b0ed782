// recond's upload page: send each picture on its own (so each has its own upload progress), then
// follow its job over server-sent events until it is done, failed or a duplicate.
"use strict";

const STAGE_WORDS = { waiting: "waiting for recond to take it", queued: "queued" };

function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function addRow(file) {
  const row = document.createElement("li");
  row.className = "card";
  row.innerHTML = '<div class="row"><span class="name"></span><span class="status facts"></span></div>' +
    '<progress max="100" value="0"></progress><div class="outcome"></div>';
  row.querySelector(".name").textContent = file.name;
  document.getElementById("uploads").prepend(row);
  return row;
}

function show(row, state, text, percent) {
  row.dataset.state = state;
  row.querySelector(".status").textContent = text;
  if (percent !== undefined) row.querySelector("progress").value = percent;
}

function showJob(row, job) {
  const percent = Math.round((job.progress || 0) * 100);
  if (job.state === "running") {
    const eta = job.eta_s !== null ? ` · about ${formatSeconds(job.eta_s)} left` : "";
    show(row, "running", `${job.stage || "starting"} · ${percent}%${eta}`, percent);
  } else if (job.state === "queued") {
    show(row, "queued", STAGE_WORDS.queued, 0);
  } else if (job.state === "done" || job.state === "duplicate") {
    const taken = job.finished_at && job.started_at ? ` in ${formatSeconds(job.finished_at - job.started_at)}` : "";
    show(row, job.state, job.state === "done" ? `done${taken}` : "already made from the same picture", 100);
    const link = document.createElement("a");
    link.href = job.result_url;
    link.textContent = "View the 3D result";
    row.querySelector(".outcome").replaceChildren(link);
  } else if (job.state === "failed") {
    show(row, "failed", "failed");
    const error = document.createElement("span");
    error.className = "error";
    error.textContent = job.error || "the job failed";
    row.querySelector(".outcome").replaceChildren(error);
  }
}

function follow(row, upload) {
  const events = new EventSource(upload.events_url);
  events.addEventListener("waiting", () => show(row, "waiting", STAGE_WORDS.waiting, 0));
  events.addEventListener("job", (message) => {
    const job = JSON.parse(message.data);
    row.dataset.job = job.id;
    showJob(row, job);
    if (job.state !== "queued" && job.state !== "running") events.close();
  });
}

// Two uploads at a time from this page; the rest wait their turn (the server also limits how
// many it receives at once, web_max_uploads, and answers 429 with Retry-After beyond that).
const PARALLEL_UPLOADS = 2;
const waiting = [];
let sending = 0;

function enqueue(file) {
  const row = addRow(file);
  show(row, "pending", "waiting to upload");
  waiting.push({ file, row });
  pump();
}

function pump() {
  while (sending < PARALLEL_UPLOADS && waiting.length) {
    const { file, row } = waiting.shift();
    sending += 1;
    send(file, row, () => { sending -= 1; pump(); });
  }
}

function send(file, row, finished) {
  const form = new FormData();
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
      show(row, "waiting", STAGE_WORDS.waiting, 0);
      follow(row, answer.uploads[0]);
    } else if (request.status === 429) {
      const seconds = Number(request.getResponseHeader("Retry-After")) || 1;
      show(row, "pending", "server busy: retrying");
      setTimeout(() => { waiting.unshift({ file, row }); pump(); }, seconds * 1000);
    } else {
      show(row, "refused", `refused (${request.status})`);
      const error = document.createElement("span");
      error.className = "error";
      error.textContent = answer.detail || request.statusText;
      row.querySelector(".outcome").replaceChildren(error);
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
