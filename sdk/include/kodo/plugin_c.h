/*
 * plugin_c.h: small helpers for a plugin written in C (C99 or later), for the chores every
 * C author repeats: the naming rule for fid and username, filling a kodo_error, and building
 * an event or execution page that owns copies of what it points to. Header only; every
 * function is static inline. Memory is malloc'd and freed by the page's or error's own
 * release, as kodo_plugin.h requires.
 */
#ifndef KODO_PLUGIN_C_H
#define KODO_PLUGIN_C_H

#include <kodo/kodo_plugin.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The naming rule of kodo_event (1..64 bytes of [A-Za-z0-9_.@-], not starting with '.'):
 * NULL when `value` keeps it, otherwise a static text naming what is wrong.
 */
static inline const char *kodo_name_problem(const char *value) {
  size_t i, length;
  if (!value) return "is missing (NULL)";
  length = strlen(value);
  if (length == 0) return "is empty";
  if (length > 64) return "is longer than 64 bytes";
  if (value[0] == '.') return "starts with '.'";
  for (i = 0; i < length; ++i) {
    char c = value[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '@' || c == '-'))
      return "holds a byte outside A-Z a-z 0-9 _ . @ -";
  }
  return NULL;
}

static inline void kodo_c_free_message(kodo_error *error) {
  free(error->private_data);
  error->private_data = NULL;
}

/*
 * Fills `error` (releasing what it held) with a printf-style message and returns `code`, so
 * a function can `return kodo_fail(error, KODO_ERR_NOT_FOUND, 0, "no execution %s", fid);`.
 * Writes nothing into an error smaller than version 1's.
 */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static inline kodo_status
kodo_fail(kodo_error *error, kodo_status code, int retryable, const char *format, ...) {
  va_list args;
  char *message;
  int length;
  if (!error || !KODO_HAS_FIELD(error, private_data)) return code;
  kodo_error_release(error);
  va_start(args, format);
  length = vsnprintf(NULL, 0, format, args);
  va_end(args);
  message = length >= 0 ? (char *)malloc((size_t)length + 1) : NULL;
  if (message) {
    va_start(args, format);
    (void)vsnprintf(message, (size_t)length + 1, format, args);
    va_end(args);
  }
  error->code = code;
  error->retryable = retryable ? 1 : 0;
  error->message = message ? message : "out of memory while reporting an error";
  error->private_data = message;
  error->release = kodo_c_free_message;
  return code;
}

/* Refuses a fid or username that breaks the naming rule: KODO_OK or a filled error. */
static inline kodo_status kodo_check_name(kodo_error *error, const char *what, const char *value) {
  const char *problem = kodo_name_problem(value);
  if (!problem) return KODO_OK;
  return kodo_fail(error, KODO_ERR_INVALID_ARGUMENT, 0, "invalid %s \"%.80s\": %s", what,
                   value ? value : "", problem);
}

/* ---- Pages: an array of pointers to items, each item one malloc'd block with its strings -- */

/* A growing array of pointers to blocks that the page's release frees. */
typedef struct kodo_c_page_data {
  void **items;
  size_t count, capacity;
  void *typed; /* the items as the page's own pointer type, made by finish */
} kodo_c_page_data;

static inline int kodo_c_page_push(kodo_c_page_data *data, void *item) {
  if (data->count == data->capacity) {
    size_t capacity = data->capacity ? data->capacity * 2 : 16;
    void **grown = (void **)realloc(data->items, capacity * sizeof *grown);
    if (!grown) return 0;
    data->items = grown;
    data->capacity = capacity;
  }
  data->items[data->count++] = item;
  return 1;
}

static inline void kodo_c_page_data_free(kodo_c_page_data *data) {
  size_t i;
  if (!data) return;
  for (i = 0; i < data->count; ++i) free(data->items[i]);
  free(data->items);
  free(data->typed);
  free(data);
}

/* Copies `text` to *cursor and advances it; returns the copy. */
static inline const char *kodo_c_copy(char **cursor, const char *text, size_t length) {
  char *copy = *cursor;
  if (length) memcpy(copy, text, length);
  copy[length] = '\0';
  *cursor += length + 1;
  return copy;
}

/*
 * Takes a builder's items for its page (the builder is empty afterwards): *data gets them,
 * with `typed` sized for one pointer of the page's type per item. On failure (the caller's
 * page is smaller than version 1's, or memory ran out) the items are freed and the error
 * filled.
 */
static inline kodo_status kodo_c_page_take(kodo_c_page_data **items, int page_fits,
                                           size_t pointer_size, kodo_c_page_data **data,
                                           kodo_error *error) {
  kodo_c_page_data *taken = *items;
  *items = NULL;
  if (!page_fits) {
    kodo_c_page_data_free(taken);
    return kodo_fail(error, KODO_ERR_INVALID_ARGUMENT, 0, "the output page is too small");
  }
  if (!taken) taken = (kodo_c_page_data *)calloc(1, sizeof(kodo_c_page_data));
  if (taken) taken->typed = malloc((taken->count + 1) * pointer_size);
  if (!taken || !taken->typed) {
    kodo_c_page_data_free(taken);
    return kodo_fail(error, KODO_ERR_INTERNAL, 1, "out of memory");
  }
  *data = taken;
  return KODO_OK;
}

/* A copy of `e` in one malloc'd block with its strings and payload (free() releases it). */
static inline kodo_event *kodo_event_copy(const kodo_event *e) {
  size_t fid = strlen(e->fid), user = strlen(e->username), kind = strlen(e->kind);
  kodo_event *copy = (kodo_event *)malloc(sizeof *copy + fid + user + kind + e->payload_len + 4);
  char *cursor;
  if (!copy) return NULL;
  cursor = (char *)(copy + 1);
  copy->struct_size = sizeof *copy;
  copy->fid = kodo_c_copy(&cursor, e->fid, fid);
  copy->username = kodo_c_copy(&cursor, e->username, user);
  copy->kind = kodo_c_copy(&cursor, e->kind, kind);
  copy->payload = kodo_c_copy(&cursor, e->payload ? e->payload : "", e->payload_len);
  copy->payload_len = e->payload_len;
  copy->seq = e->seq;
  copy->timestamp = e->timestamp;
  return copy;
}

/*
 * Builds an event page: kodo_event_page_add copies each event (strings and payload), and
 * kodo_event_page_finish hands the copies to `out` with a release that frees them. On a
 * failed add nothing is lost: call kodo_event_page_discard and fail the call.
 */
typedef struct kodo_event_page_builder {
  kodo_c_page_data *data;
} kodo_event_page_builder;

static inline int kodo_event_page_add(kodo_event_page_builder *builder, const kodo_event *e) {
  kodo_event *copy;
  if (!builder->data && !(builder->data = (kodo_c_page_data *)calloc(1, sizeof(kodo_c_page_data))))
    return 0;
  if (!(copy = kodo_event_copy(e))) return 0;
  if (!kodo_c_page_push(builder->data, copy)) {
    free(copy);
    return 0;
  }
  return 1;
}

static inline void kodo_c_release_event_page(kodo_event_page *page) {
  kodo_c_page_data_free((kodo_c_page_data *)page->private_data);
  page->private_data = NULL;
  page->events = NULL;
  page->count = 0;
  page->release = NULL;
}

static inline kodo_status kodo_event_page_finish(kodo_event_page_builder *builder, int has_more,
                                                 kodo_event_page *out, kodo_error *error) {
  kodo_c_page_data *data = NULL;
  const kodo_event **events;
  size_t i;
  kodo_status status = kodo_c_page_take(&builder->data, out && KODO_HAS_FIELD(out, private_data),
                                        sizeof *events, &data, error);
  if (status != KODO_OK) return status;
  events = (const kodo_event **)data->typed;
  for (i = 0; i < data->count; ++i) events[i] = (const kodo_event *)data->items[i];
  out->events = events;
  out->count = data->count;
  out->has_more = has_more ? 1 : 0;
  out->private_data = data;
  out->release = kodo_c_release_event_page;
  return KODO_OK;
}

static inline void kodo_event_page_discard(kodo_event_page_builder *builder) {
  kodo_c_page_data_free(builder->data);
  builder->data = NULL;
}

/* The same for execution summaries (list_executions, get_execution). */
typedef struct kodo_execution_page_builder {
  kodo_c_page_data *data;
} kodo_execution_page_builder;

static inline int kodo_execution_page_add(kodo_execution_page_builder *builder,
                                          const kodo_execution_info *x) {
  size_t fid = strlen(x->fid), user = strlen(x->username), status = strlen(x->status);
  kodo_execution_info *copy;
  char *cursor;
  if (!builder->data && !(builder->data = (kodo_c_page_data *)calloc(1, sizeof(kodo_c_page_data))))
    return 0;
  copy = (kodo_execution_info *)malloc(sizeof *copy + fid + user + status + 3);
  if (!copy) return 0;
  *copy = *x;
  copy->struct_size = sizeof *copy;
  cursor = (char *)(copy + 1);
  copy->fid = kodo_c_copy(&cursor, x->fid, fid);
  copy->username = kodo_c_copy(&cursor, x->username, user);
  copy->status = kodo_c_copy(&cursor, x->status, status);
  if (!kodo_c_page_push(builder->data, copy)) {
    free(copy);
    return 0;
  }
  return 1;
}

static inline void kodo_c_release_execution_page(kodo_execution_page *page) {
  kodo_c_page_data_free((kodo_c_page_data *)page->private_data);
  page->private_data = NULL;
  page->executions = NULL;
  page->count = 0;
  page->release = NULL;
}

static inline kodo_status kodo_execution_page_finish(kodo_execution_page_builder *builder,
                                                     int has_more, kodo_execution_page *out,
                                                     kodo_error *error) {
  kodo_c_page_data *data = NULL;
  const kodo_execution_info **items;
  size_t i;
  kodo_status status = kodo_c_page_take(&builder->data, out && KODO_HAS_FIELD(out, private_data),
                                        sizeof *items, &data, error);
  if (status != KODO_OK) return status;
  items = (const kodo_execution_info **)data->typed;
  for (i = 0; i < data->count; ++i) items[i] = (const kodo_execution_info *)data->items[i];
  out->executions = items;
  out->count = data->count;
  out->has_more = has_more ? 1 : 0;
  out->private_data = data;
  out->release = kodo_c_release_execution_page;
  return KODO_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* KODO_PLUGIN_C_H */
