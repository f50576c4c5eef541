/* fetch_download.c: one HTTP(S) download with resume through libcurl, and SHA-256 of a file.
 *
 * The body goes into DEST.part (locked with flock, so two `i2i fetch` runs never write one file),
 * a non-empty .part is continued with `Range: bytes=N-` (206 appended, 200 restarted, anything
 * else refused), transient breaks are retried, and DEST appears only by rename. Sizes are checked
 * against a limit and the free space; redirects, protocols and stalls are capped. Not a general
 * HTTP client, and nothing here knows about checkpoints.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <curl/curl.h>

#include "fetch_download.h"

#define DEFAULT_MAX_BYTES (UINT64_C(4) << 30)
#define STALL_BYTES_PER_S 1024L

void fetch_default_options(fetch_options *o) {
  memset(o, 0, sizeof *o);
  o->max_bytes = DEFAULT_MAX_BYTES;
  o->connect_timeout_s = 30;
  o->stall_timeout_s = 30;
  o->max_redirects = 10;
  o->retries = 3;
  o->retry_delay_s = 1.0;
}

const char *fetch_format_bytes(uint64_t b, char *buf, size_t len) {
  if (b < 1000) snprintf(buf, len, "%" PRIu64 " bytes", b);
  else if (b < 1000 * 1000) snprintf(buf, len, "%.1f kB", b / 1e3);
  else if (b < UINT64_C(1000) * 1000 * 1000) snprintf(buf, len, "%.1f MB", b / 1e6);
  else snprintf(buf, len, "%.2f GB", b / 1e9);
  return buf;
}

bool fetch_sha256_file(const char *path, char hex[65], char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "cannot read '%s': %s", path, g_strerror(errno));
    return false;
  }
  GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
  enum { CHUNK = 1 << 20 };
  guchar *buf = g_try_malloc(CHUNK);
  bool ok = ck && buf;
  if (!ok) snprintf(err, errlen, "out of memory hashing '%s'", path);
  while (ok) {
    ssize_t k = read(fd, buf, CHUNK);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      snprintf(err, errlen, "cannot read '%s': %s", path, g_strerror(errno));
      ok = false;
      break;
    }
    if (k == 0) break;
    g_checksum_update(ck, buf, (gssize)k);
  }
  if (ok) snprintf(hex, 65, "%s", g_checksum_get_string(ck));
  if (ck) g_checksum_free(ck);
  g_free(buf);
  close(fd);
  return ok;
}

/* ---- one transfer --------------------------------------------------------------------------- */

typedef enum { W_NONE = 0, W_DISK_FULL, W_IO, W_LIMIT, W_BAD_RANGE, W_NOSPACE_AHEAD } write_failure;

typedef struct {
  CURL *curl;
  int fd;
  const char *part;
  uint64_t offset;          /* bytes in the .part before this attempt's body */
  uint64_t written;         /* body bytes written by this attempt */
  uint64_t max_bytes;
  uint64_t total;           /* the whole file's size when the server said it; 0 unknown */
  bool started;
  write_failure failure;
  int saved_errno;
  uint64_t need, avail;     /* W_NOSPACE_AHEAD figures */
  char content_range[128];
  fetch_result *r;
  fetch_progress_fn progress;
  void *progress_user;
  uint64_t last_now;        /* what the progress callback was last told, to skip repeats */
  bool reported;
} xfer;

static bool parse_u64(const char **p, uint64_t *v) {
  const char *s = *p;
  if (*s < '0' || *s > '9') return false;
  uint64_t x = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    unsigned d = (unsigned)(*s - '0');
    if (x > (UINT64_MAX - d) / 10) return false;
    x = x * 10 + d;
  }
  *v = x;
  *p = s;
  return true;
}

/* Content-Range "bytes S-E/T"; T may be an asterisk (then 0: unknown), and so may S-E (then
 * S = E = UINT64_MAX, as a 416 reply gives the size). */
static bool parse_content_range(const char *s, uint64_t *start, uint64_t *end, uint64_t *total) {
  if (g_ascii_strncasecmp(s, "bytes", 5)) return false;
  s += 5;
  while (*s == ' ') s++;
  if (*s == '*') {
    *start = *end = UINT64_MAX;
    s++;
  } else {
    if (!parse_u64(&s, start) || *s++ != '-' || !parse_u64(&s, end) || *end < *start) return false;
  }
  if (*s++ != '/') return false;
  if (*s == '*') {
    *total = 0;
    s++;
  } else if (!parse_u64(&s, total)) {
    return false;
  }
  while (*s == ' ' || *s == '\r' || *s == '\n') s++;
  return *s == 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *user) {
  xfer *x = user;
  if (size && n > SIZE_MAX / size) return 0;
  size_t len = size * n;
  if (len >= 5 && !memcmp(p, "HTTP/", 5)) x->content_range[0] = 0; /* a new response (redirects) */
  static const char key[] = "content-range:";
  if (len > sizeof key - 1 && !g_ascii_strncasecmp(p, key, sizeof key - 1)) {
    size_t o = sizeof key - 1;
    while (o < len && (p[o] == ' ' || p[o] == '\t')) o++;
    size_t vl = len - o;
    while (vl && (p[o + vl - 1] == '\r' || p[o + vl - 1] == '\n' || p[o + vl - 1] == ' ')) vl--;
    if (vl >= sizeof x->content_range) vl = sizeof x->content_range - 1;
    memcpy(x->content_range, p + o, vl);
    x->content_range[vl] = 0;
  }
  return len;
}

/* Decides what the response body means for the .part: append (206 at our offset), restart (200),
 * or refuse; checks the announced size against the limit and the free space. */
static bool start_body(xfer *x) {
  long code = 0;
  curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
  curl_off_t cl = -1;
  curl_easy_getinfo(x->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
  x->started = true;
  if (code == 206) {
    uint64_t s, e, t;
    if (x->offset == 0 || !parse_content_range(x->content_range, &s, &e, &t) || s != x->offset) {
      x->failure = W_BAD_RANGE;
      return false;
    }
    x->total = t;
  } else {
    if (x->offset > 0) {
      /* the server ignored the Range: the body is the whole file again */
      if (ftruncate(x->fd, 0) != 0 && errno != EINVAL) {
        x->failure = W_IO;
        x->saved_errno = errno;
        return false;
      }
      if (lseek(x->fd, 0, SEEK_SET) < 0 && errno != ESPIPE) {
        x->failure = W_IO;
        x->saved_errno = errno;
        return false;
      }
      x->offset = 0;
      x->r->restarts++;
    }
    x->total = cl >= 0 ? (uint64_t)cl : 0;
  }
  if (cl >= 0) {
    uint64_t rest = (uint64_t)cl;
    if (rest > x->max_bytes || x->offset > x->max_bytes - rest) {
      x->failure = W_LIMIT;
      x->total = rest > UINT64_MAX - x->offset ? UINT64_MAX : x->offset + rest;
      return false;
    }
    if (!x->total) x->total = x->offset + rest;
    struct statvfs sv;
    if (fstatvfs(x->fd, &sv) == 0 && sv.f_frsize) {
      uint64_t avail = (uint64_t)sv.f_bavail > UINT64_MAX / (uint64_t)sv.f_frsize
                           ? UINT64_MAX
                           : (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
      struct stat sb;
      if (fstat(x->fd, &sb) == 0 && S_ISREG(sb.st_mode) && rest > avail) {
        x->failure = W_NOSPACE_AHEAD;
        x->need = rest;
        x->avail = avail;
        return false;
      }
    }
  } else if (x->total > x->max_bytes) {
    x->failure = W_LIMIT;
    return false;
  }
  return true;
}

static size_t on_body(char *p, size_t size, size_t n, void *user) {
  xfer *x = user;
  if (size && n > SIZE_MAX / size) return 0;
  size_t len = size * n;
  if (!x->started && !start_body(x)) return 0;
  uint64_t have = x->offset + x->written;
  if (have > x->max_bytes || len > x->max_bytes - have) {
    x->failure = W_LIMIT;
    return 0;
  }
  size_t done = 0;
  while (done < len) {
    ssize_t k = write(x->fd, p + done, len - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      x->saved_errno = k < 0 ? errno : EIO;
      x->failure = x->saved_errno == ENOSPC || x->saved_errno == EDQUOT ? W_DISK_FULL : W_IO;
      x->written += done;
      x->r->bytes_received += done;
      return 0;
    }
    done += (size_t)k;
  }
  x->written += len;
  x->r->bytes_received += len;
  return len;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
  (void)ultotal;
  (void)ulnow;
  xfer *x = user;
  if (!x->progress) return 0;
  uint64_t total = x->total ? x->total : dltotal > 0 ? x->offset + (uint64_t)dltotal : 0;
  uint64_t now = x->offset + (dlnow > 0 ? (uint64_t)dlnow : 0);
  if (x->reported && now == x->last_now) return 0;
  x->reported = true;
  x->last_now = now;
  x->progress(x->progress_user, total ? (double)now / (double)total : -1.0);
  return 0;
}

typedef enum { A_DONE, A_RETRY, A_FAIL } attempt_outcome;

static const char *http_reason(long code) {
  switch (code) {
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 410: return "Gone";
  case 416: return "Range Not Satisfiable";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return code >= 500 ? "server error" : "client error";
  }
}

static bool truncate_part(int fd) {
  return (ftruncate(fd, 0) == 0 || errno == EINVAL) && (lseek(fd, 0, SEEK_SET) >= 0 || errno == ESPIPE);
}

/* Renames the complete .part to DEST after flushing it to disk. */
static fetch_status finish_part(const fetch_options *o, const char *part, int fd, char *err, size_t errlen) {
  if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    int e = errno;
    snprintf(err, errlen, "%s writing '%s': %s", e == ENOSPC || e == EDQUOT ? "no disk space" : "cannot finish",
             part, g_strerror(e));
    return e == ENOSPC || e == EDQUOT ? FETCH_E_DISK_FULL : FETCH_E_IO;
  }
  if (rename(part, o->dest) != 0) {
    snprintf(err, errlen, "cannot rename '%s' to '%s': %s", part, o->dest, g_strerror(errno));
    return FETCH_E_IO;
  }
  return FETCH_OK;
}

static attempt_outcome attempt(const fetch_options *o, CURL *curl, int fd, const char *part, fetch_result *r,
                               fetch_status *st, char *err, size_t errlen) {
  const char *url = o->url;
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    snprintf(err, errlen, "cannot read '%s': %s", part, g_strerror(errno));
    *st = FETCH_E_IO;
    return A_FAIL;
  }
  uint64_t offset = S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : 0;
  if (offset > o->max_bytes) {
    if (!truncate_part(fd)) {
      snprintf(err, errlen, "cannot truncate '%s': %s", part, g_strerror(errno));
      *st = FETCH_E_IO;
      return A_FAIL;
    }
    offset = 0;
  }
  if (lseek(fd, (off_t)offset, SEEK_SET) < 0 && errno != ESPIPE) {
    snprintf(err, errlen, "cannot seek in '%s': %s", part, g_strerror(errno));
    *st = FETCH_E_IO;
    return A_FAIL;
  }
  if (r->attempts == 0) r->resumed_from = offset;
  r->attempts++;
  xfer x = {.curl = curl, .fd = fd, .part = part, .offset = offset, .max_bytes = o->max_bytes, .r = r,
            .progress = o->progress, .progress_user = o->progress_user};
  char range[48];
  snprintf(range, sizeof range, "%" PRIu64 "-", offset);
  char cerr[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
  curl_easy_setopt(curl, CURLOPT_RANGE, offset ? range : NULL);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &x);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &x);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &x);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  CURLcode cc = curl_easy_perform(curl);
  long code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  r->http_status = code;
  if (cc == CURLE_OK && !x.started) start_body(&x); /* an empty body */
  char a[32], b[32];
  switch (x.failure) {
  case W_NONE: break;
  case W_DISK_FULL:
    snprintf(err, errlen, "no disk space: writing '%s' failed after %s: %s (free some space and run again to resume)",
             part, fetch_format_bytes(x.offset + x.written, a, sizeof a), g_strerror(x.saved_errno));
    *st = FETCH_E_DISK_FULL;
    return A_FAIL;
  case W_NOSPACE_AHEAD:
    snprintf(err, errlen, "no disk space for '%s': it needs %s more, %s free", part,
             fetch_format_bytes(x.need, a, sizeof a), fetch_format_bytes(x.avail, b, sizeof b));
    *st = FETCH_E_DISK_FULL;
    return A_FAIL;
  case W_IO:
    snprintf(err, errlen, "cannot write '%s': %s", part, g_strerror(x.saved_errno));
    *st = FETCH_E_IO;
    return A_FAIL;
  case W_LIMIT:
    snprintf(err, errlen, "%s: the file is larger than the %s limit (the server announced %s); refused", url,
             fetch_format_bytes(o->max_bytes, a, sizeof a),
             x.total ? fetch_format_bytes(x.total, b, sizeof b) : "no size");
    *st = FETCH_E_LIMIT;
    return A_FAIL;
  case W_BAD_RANGE:
    /* a 206 that does not continue our .part: start over */
    if (!truncate_part(fd)) {
      snprintf(err, errlen, "cannot truncate '%s': %s", part, g_strerror(errno));
      *st = FETCH_E_IO;
      return A_FAIL;
    }
    snprintf(err, errlen, "%s: the server sent a partial reply that does not continue the download (%s%s)", url,
             x.content_range[0] ? "Content-Range: " : "no Content-Range", x.content_range);
    *st = FETCH_E_TRANSFER;
    return A_RETRY;
  }
  switch (cc) {
  case CURLE_OK: {
    if (code != 200 && code != 206) {
      snprintf(err, errlen, "%s: unexpected HTTP %ld reply", url, code);
      *st = FETCH_E_HTTP;
      return A_FAIL;
    }
    uint64_t have = x.offset + x.written;
    if (x.total && have != x.total) {
      snprintf(err, errlen, "%s: the transfer ended at %" PRIu64 " of %" PRIu64 " bytes", url, have, x.total);
      *st = FETCH_E_TRANSFER;
      return A_RETRY;
    }
    r->size = have;
    *st = finish_part(o, part, fd, err, errlen);
    return *st ? A_FAIL : A_DONE;
  }
  case CURLE_HTTP_RETURNED_ERROR:
    if (code == 416 && offset > 0) {
      uint64_t s, e, t;
      if (parse_content_range(x.content_range, &s, &e, &t) && t == offset) {
        r->size = offset; /* the .part already held the whole file */
        *st = finish_part(o, part, fd, err, errlen);
        return *st ? A_FAIL : A_DONE;
      }
      if (!truncate_part(fd)) {
        snprintf(err, errlen, "cannot truncate '%s': %s", part, g_strerror(errno));
        *st = FETCH_E_IO;
        return A_FAIL;
      }
      snprintf(err, errlen, "%s: HTTP 416 to a resume at byte %" PRIu64, url, offset);
      *st = FETCH_E_HTTP;
      return A_RETRY;
    }
    snprintf(err, errlen, "%s: HTTP %ld (%s)%s", url, code, http_reason(code),
             code == 404 || code == 410 ? ": the file is not on the server (the manifest may be out of date)"
             : code >= 500              ? ": the server has a problem; try again later"
                                        : "");
    *st = FETCH_E_HTTP;
    return A_FAIL;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    snprintf(err, errlen, "cannot resolve the host of %s (no network, or no DNS?): %s", url, cerr[0] ? cerr : curl_easy_strerror(cc));
    *st = FETCH_E_NETWORK;
    return A_FAIL;
  case CURLE_COULDNT_CONNECT:
    snprintf(err, errlen, "cannot connect to %s (no network, or the server is down?): %s", url, cerr[0] ? cerr : curl_easy_strerror(cc));
    *st = FETCH_E_NETWORK;
    return A_FAIL;
  case CURLE_TOO_MANY_REDIRECTS:
    snprintf(err, errlen, "%s: more than %d redirects (a redirect loop?)", url, o->max_redirects);
    *st = FETCH_E_REDIRECTS;
    return A_FAIL;
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT:
    snprintf(err, errlen, "%s: %s (i2i fetch follows http:// and https:// URLs only)", url, cerr[0] ? cerr : curl_easy_strerror(cc));
    *st = FETCH_E_ARG;
    return A_FAIL;
  case CURLE_OPERATION_TIMEDOUT:
    if (!code)
      snprintf(err, errlen, "%s: no answer within %ld s: %s", url, o->connect_timeout_s, cerr[0] ? cerr : curl_easy_strerror(cc));
    else
      snprintf(err, errlen, "%s: the transfer stalled (under %ld bytes/s for %ld s) at %s", url, STALL_BYTES_PER_S,
               o->stall_timeout_s, fetch_format_bytes(x.offset + x.written, a, sizeof a));
    *st = code ? FETCH_E_TRANSFER : FETCH_E_NETWORK;
    return A_RETRY;
  case CURLE_PARTIAL_FILE:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    snprintf(err, errlen, "%s: the connection broke at %s: %s", url, fetch_format_bytes(x.offset + x.written, a, sizeof a),
             cerr[0] ? cerr : curl_easy_strerror(cc));
    *st = FETCH_E_TRANSFER;
    return A_RETRY;
  case CURLE_FILESIZE_EXCEEDED: {
    curl_off_t cl = -1;
    curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    snprintf(err, errlen, "%s: the file is larger than the %s limit (the server announced %s); refused", url,
             fetch_format_bytes(o->max_bytes, a, sizeof a), cl >= 0 ? fetch_format_bytes((uint64_t)cl, b, sizeof b) : "more");
    *st = FETCH_E_LIMIT;
    return A_FAIL;
  }
  case CURLE_OUT_OF_MEMORY:
    snprintf(err, errlen, "%s: out of memory", url);
    *st = FETCH_E_NOMEM;
    return A_FAIL;
  default:
    if (cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE ||
        cc == CURLE_SSL_CERTPROBLEM || cc == CURLE_SSL_CIPHER || cc == CURLE_SSL_ISSUER_ERROR) {
      snprintf(err, errlen, "%s: the TLS connection failed: %s", url, cerr[0] ? cerr : curl_easy_strerror(cc));
      *st = FETCH_E_NETWORK;
      return A_FAIL;
    }
    snprintf(err, errlen, "%s: %s", url, cerr[0] ? cerr : curl_easy_strerror(cc));
    *st = FETCH_E_TRANSFER;
    return A_FAIL;
  }
}

fetch_status fetch_download(const fetch_options *o, fetch_result *r, char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  if (!o || !o->url || !o->dest || !o->dest[0]) {
    snprintf(err, errlen, "fetch_download: no URL or destination");
    return FETCH_E_ARG;
  }
  if (g_ascii_strncasecmp(o->url, "http://", 7) && g_ascii_strncasecmp(o->url, "https://", 8)) {
    snprintf(err, errlen, "%s: not an http:// or https:// URL", o->url);
    return FETCH_E_ARG;
  }
  gchar *part = g_strconcat(o->dest, ".part", NULL);
  int fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "cannot create '%s': %s", part, g_strerror(e));
    g_free(part);
    return e == ENOSPC || e == EDQUOT ? FETCH_E_DISK_FULL : FETCH_E_IO;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(err, errlen, "'%s' is being downloaded by another process (%s)", part, g_strerror(errno));
    close(fd);
    g_free(part);
    return FETCH_E_BUSY;
  }
  CURL *curl = curl_easy_init();
  if (!curl) {
    snprintf(err, errlen, "cannot start libcurl");
    close(fd);
    g_free(part);
    return FETCH_E_NOMEM;
  }
  char ua[64];
  snprintf(ua, sizeof ua, "i2i-fetch (libcurl %s)", curl_version_info(CURLVERSION_NOW)->version);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, ua);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, (long)(o->max_redirects >= 0 ? o->max_redirects : 0));
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, o->connect_timeout_s > 0 ? o->connect_timeout_s : 30L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, STALL_BYTES_PER_S);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, o->stall_timeout_s > 0 ? o->stall_timeout_s : 30L);
  curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(o->max_bytes > INT64_MAX ? INT64_MAX : o->max_bytes));
  fetch_status st = FETCH_OK;
  for (int k = 0;; k++) {
    attempt_outcome a = attempt(o, curl, fd, part, r, &st, err, errlen);
    if (a == A_DONE) {
      st = FETCH_OK;
      break;
    }
    if (a == A_FAIL || k >= o->retries) {
      if (a == A_RETRY && o->retries >= 0) {
        size_t l = strlen(err);
        snprintf(err + l, errlen - l, " (after %d attempt%s; run again to resume)", r->attempts, r->attempts == 1 ? "" : "s");
      }
      break;
    }
    if (o->retry_delay_s > 0) g_usleep((gulong)(o->retry_delay_s * (k + 1) * 1e6));
  }
  curl_easy_cleanup(curl);
  close(fd);
  g_free(part);
  return st;
}
