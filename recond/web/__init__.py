"""recond-web: the web front end on the daemon's queue (upload, live progress, results, gallery,
API, metrics). A separate process that reads the store and outbox and writes only the inbox."""
