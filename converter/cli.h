/* cli.h: what the `i2i` tool's subcommands share: the command table, option helpers, the
 * engine context setup and a terminal progress bar. Not part of the engine API.
 */
#ifndef I2I_CLI_H
#define I2I_CLI_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "i2i.h"

/* Each subcommand: argv[0] is the subcommand name; returns the process exit status. */
int cmd_translate(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_fetch(int argc, char **argv);

/* Parses "512", "64K", "1.5G" (1024-based) into bytes; false on junk or overflow. */
bool cli_parse_size(const char *s, uint64_t *bytes);

/* Parses "auto|cpu|cuda" into a backend; false otherwise. */
bool cli_parse_backend(const char *s, i2i_backend *b);

/* Creates an engine context with the backend, threads and memory budget given (logging
 * warnings to stderr). Prints the message and returns NULL on failure. */
i2i_ctx *cli_ctx(i2i_backend backend, int threads, uint64_t memory);

/* The files of folder DIR (not recursive, hidden names skipped) for which WANT(path) is true,
 * as full paths sorted by name in a GPtrArray that frees them; NULL when DIR cannot be read.
 * What else the folder holds is not dropped unseen: one line on stderr under CMD counts and
 * names the files WANT refuses (WHAT says what i2i reads, e.g. "PNG, JPEG, TIFF and WebP"),
 * subfolders, broken links and other entries, and *skipped (NULL: not counted) grows by their
 * number. */
GPtrArray *cli_list_folder(const char *cmd, const char *dir, bool (*want)(const char *path), const char *what,
                           int *skipped);

/* A broken $I2I_MANIFEST must not pass unnoticed: without the manifest a published file gets no
 * task names, labels or colour order from it. Warns on stderr ("i2i <cmd>: warning: ..."), naming
 * the file and the problem, and unsets it so the command goes on with the built-in manifest
 * (`i2i fetch`, which needs the manifest's URLs, stops instead). */
void cli_check_manifest_override(const char *cmd);

/* True when path p ends with ext (e.g. ".npy"), ignoring ASCII case, and is longer than it. */
bool cli_has_ext(const char *p, const char *ext);

/* Prints "i2i <cmd>: <message>" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* A one-line progress bar with the time left, drawn on stderr only when it is a terminal. */
typedef struct {
  bool enabled;
  double start;
  double last_draw;
  char label[96];
} cli_progress;

void cli_progress_init(cli_progress *p, const char *label);
/* fraction in [0,1] of the whole job; returns 0 (never cancels). */
int cli_progress_update(void *p, double fraction);
void cli_progress_done(cli_progress *p);
double cli_now(void);

#endif
