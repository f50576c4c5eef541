/* fetch_download.h: `i2i fetch`'s transport: one HTTP(S) download with resume, and SHA-256.
 *
 * A download goes into DEST.part next to DEST, resumes with `Range: bytes=N-`, retries transient
 * failures and renames the .part to DEST only when the whole body arrived. It knows nothing of
 * the manifest, checkpoints or models (cmd_fetch.c does); it is not a general HTTP client.
 */
#ifndef I2I_FETCH_DOWNLOAD_H
#define I2I_FETCH_DOWNLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  FETCH_OK = 0,
  FETCH_E_ARG,       /* a bad URL or option */
  FETCH_E_NETWORK,   /* no network: the host did not resolve, the connection was refused, TLS */
  FETCH_E_HTTP,      /* the server answered with an HTTP error (status in the result) */
  FETCH_E_TRANSFER,  /* the transfer broke or stalled and the retries ran out (.part kept) */
  FETCH_E_REDIRECTS, /* more redirects than allowed */
  FETCH_E_LIMIT,     /* the body is larger than max_bytes */
  FETCH_E_DISK_FULL, /* ENOSPC / EDQUOT while writing, or too little free space announced */
  FETCH_E_IO,        /* the .part could not be created, written, read or renamed */
  FETCH_E_BUSY,      /* another process holds the .part's lock */
  FETCH_E_NOMEM
} fetch_status;

/* Progress: fraction in [0,1] of the whole file (resumed bytes included), or negative when the
 * size is unknown. The return value is ignored. */
typedef int (*fetch_progress_fn)(void *user, double fraction);

typedef struct {
  const char *url;          /* http:// or https:// only, also for redirects */
  const char *dest;         /* final path; DEST.part next to it holds the partial body */
  uint64_t max_bytes;       /* refuse bodies over this (default 4 GiB) */
  long connect_timeout_s;   /* default 30 */
  long stall_timeout_s;     /* abort when under 1 KiB/s for this long (default 30) */
  int max_redirects;        /* default 10 */
  int retries;              /* further attempts after a broken or stalled transfer (default 3;
                             * negative: none) */
  double retry_delay_s;     /* wait before retry k: k * this (default 1) */
  fetch_progress_fn progress;
  void *progress_user;
} fetch_options;

typedef struct {
  uint64_t bytes_received;  /* body bytes received over all attempts (what the network cost) */
  uint64_t size;            /* the complete file's size */
  uint64_t resumed_from;    /* offset the first attempt resumed at (0: started fresh) */
  int attempts;             /* requests made */
  int restarts;             /* times a server answered a Range request with the whole file */
  long http_status;         /* of the last response (0: none) */
} fetch_result;

/* Fills `o` with the defaults; url and dest stay NULL. */
void fetch_default_options(fetch_options *o);

/* Downloads o->url into o->dest. DEST.part is created or continued (a non-empty one is resumed
 * with a Range request; a 206 must start exactly at its size and is appended, a 200 restarts it
 * from zero) and renamed to DEST when complete; on failure it is left for the next run to resume
 * (an HTTP error before any body leaves it as it was). An existing DEST is overwritten. Must be
 * called between curl_global_init and curl_global_cleanup. `r` is always filled; on an error
 * `err` holds a one-line message that names the URL. */
fetch_status fetch_download(const fetch_options *o, fetch_result *r, char *err, size_t errlen);

/* The SHA-256 of the file at `path` as 64 lowercase hex digits into hex[65]. False with a
 * message in `err` when it cannot be read. */
bool fetch_sha256_file(const char *path, char hex[65], char *err, size_t errlen);

/* "113.2 MB" style (1000-based, as download sizes are given) into buf. Returns buf. */
const char *fetch_format_bytes(uint64_t bytes, char *buf, size_t len);

#endif
