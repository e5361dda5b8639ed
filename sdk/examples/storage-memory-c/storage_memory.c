/*
 * storage_memory.c: a complete kodo storage backend in plain C11, kept in memory. It shows
 * what a C author writes against kodo_plugin.h and the helpers of kodo/plugin_c.h: the
 * function table filled by name, the entry point agreeing on an ABI version, names refused
 * with KODO_ERR_INVALID_ARGUMENT, idempotent appends, pages that own their copies, and the
 * LIST, ARCHIVE and PURGE capabilities. One read-write lock guards everything.
 */
#define _POSIX_C_SOURCE 200809L /* pthread_rwlock_t under -std=c11 */

#include <kodo/kodo_plugin.h>
#include <kodo/plugin_c.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct execution {
  char fid[65], username[65];
  kodo_event **events; /* by seq, ascending; each from kodo_event_copy */
  size_t count, capacity;
  int archived;
} execution;

struct kodo_storage {
  pthread_rwlock_t lock;
  execution **executions;
  size_t count, capacity;
};

static execution *find(kodo_storage *s, const char *fid) {
  size_t i;
  for (i = 0; i < s->count; ++i)
    if (strcmp(s->executions[i]->fid, fid) == 0) return s->executions[i];
  return NULL;
}

/* The execution a read may see: known, not archived, and the user's when one is named. */
static execution *visible(kodo_storage *s, const char *fid, const char *username) {
  execution *x = find(s, fid);
  if (!x || x->archived || (username && strcmp(x->username, username) != 0)) return NULL;
  return x;
}

static int grow(void *array_pointer, size_t *capacity, size_t element_size) {
  void **array = (void **)array_pointer;
  size_t next = *capacity ? *capacity * 2 : 16;
  void *grown = realloc(*array, next * element_size);
  if (!grown) return 0;
  *array = grown;
  *capacity = next;
  return 1;
}

/* Inserts in seq order; an event already stored is skipped. 0 when out of memory. */
static int insert(execution *x, const kodo_event *e) {
  size_t at = x->count;
  kodo_event *copy;
  while (at > 0 && x->events[at - 1]->seq >= e->seq) {
    if (x->events[at - 1]->seq == e->seq) return 1;
    --at;
  }
  if (x->count == x->capacity && !grow(&x->events, &x->capacity, sizeof *x->events)) return 0;
  if (!(copy = kodo_event_copy(e))) return 0;
  memmove(x->events + at + 1, x->events + at, (x->count - at) * sizeof *x->events);
  x->events[at] = copy;
  ++x->count;
  return 1;
}

static void summarize(const execution *x, kodo_execution_info *info) {
  size_t i;
  memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
  info->fid = x->fid;
  info->username = x->username;
  info->status = "";
  for (i = x->count; i > 0; --i)
    if (strcmp(x->events[i - 1]->kind, "status") == 0) {
      info->status = x->events[i - 1]->payload;
      break;
    }
  info->started_at = x->events[0]->timestamp;
  info->updated_at = x->events[x->count - 1]->timestamp;
  info->event_count = (int64_t)x->count;
  info->last_seq = x->events[x->count - 1]->seq;
}

static void free_execution(execution *x) {
  size_t i;
  for (i = 0; i < x->count; ++i) free(x->events[i]);
  free(x->events);
  free(x);
}

/* ---- The table ------------------------------------------------------------------------- */

static kodo_status open_storage(const kodo_option *const *options, size_t option_count,
                                const kodo_host_api *host, kodo_storage **out, kodo_error *error) {
  kodo_storage *s = calloc(1, sizeof *s);
  (void)options;
  (void)option_count;
  (void)host;
  if (!s || pthread_rwlock_init(&s->lock, NULL) != 0) {
    free(s);
    return kodo_fail(error, KODO_ERR_INTERNAL, 1, "out of memory opening the storage");
  }
  *out = s;
  return KODO_OK;
}

static void close_storage(kodo_storage *s) {
  size_t i;
  for (i = 0; i < s->count; ++i) free_execution(s->executions[i]);
  free(s->executions);
  pthread_rwlock_destroy(&s->lock);
  free(s);
}

static kodo_status create_schema(kodo_storage *s, kodo_error *error) {
  (void)s;
  (void)error;
  return KODO_OK;
}

static kodo_status append(kodo_storage *s, const kodo_event *const *events, size_t count,
                          kodo_error *error) {
  size_t i;
  kodo_status status = KODO_OK;
  /* Checked first, so a refused batch stores nothing. */
  for (i = 0; i < count; ++i) {
    if (!events[i] || !events[i]->kind || !*events[i]->kind || events[i]->seq < 0)
      return kodo_fail(error, KODO_ERR_INVALID_ARGUMENT, 0,
                       "append: event #%zu is NULL, has no kind or a negative seq", i);
    if ((status = kodo_check_name(error, "fid", events[i]->fid)) != KODO_OK ||
        (status = kodo_check_name(error, "username", events[i]->username)) != KODO_OK)
      return status;
  }
  pthread_rwlock_wrlock(&s->lock);
  for (i = 0; i < count && status == KODO_OK; ++i) {
    execution *x = find(s, events[i]->fid);
    if (!x) {
      if ((s->count == s->capacity && !grow(&s->executions, &s->capacity, sizeof *s->executions)) ||
          !(x = calloc(1, sizeof *x))) {
        status = kodo_fail(error, KODO_ERR_INTERNAL, 1, "out of memory");
        break;
      }
      strcpy(x->fid, events[i]->fid);
      strcpy(x->username, events[i]->username);
      s->executions[s->count++] = x;
    }
    if (!insert(x, events[i])) status = kodo_fail(error, KODO_ERR_INTERNAL, 1, "out of memory");
  }
  pthread_rwlock_unlock(&s->lock);
  return status; /* a retry stores the rest: appends are idempotent on (fid, seq) */
}

static int wanted(const kodo_read_request *r, const char *kind) {
  size_t i;
  if (r->kind_count == 0) return 1;
  for (i = 0; i < r->kind_count; ++i)
    if (strcmp(r->kinds[i], kind) == 0) return 1;
  return 0;
}

static kodo_status read_events(kodo_storage *s, const kodo_read_request *given,
                               kodo_event_page *out, kodo_error *error) {
  kodo_read_request r;
  kodo_event_page_builder page = {NULL};
  const execution *x;
  size_t i, taken = 0;
  int has_more = 0;
  kodo_status status;
  /* Read up to its struct_size: an older host's request lacks the newer fields. */
  memset(&r, 0, sizeof r);
  memcpy(&r, given, given->struct_size < sizeof r ? given->struct_size : sizeof r);
  if ((status = kodo_check_name(error, "fid", r.fid)) != KODO_OK) return status;
  if (r.username && (status = kodo_check_name(error, "username", r.username)) != KODO_OK)
    return status;
  pthread_rwlock_rdlock(&s->lock);
  if (!(x = visible(s, r.fid, r.username))) {
    pthread_rwlock_unlock(&s->lock);
    return kodo_fail(error, KODO_ERR_NOT_FOUND, 0, "no execution %s", r.fid);
  }
  for (i = 0; i < x->count; ++i) {
    const kodo_event *e = x->events[i];
    if (e->seq <= r.after_seq || !wanted(&r, e->kind)) continue;
    if (taken == r.limit) {
      has_more = 1;
      break;
    }
    if (!kodo_event_page_add(&page, e)) {
      pthread_rwlock_unlock(&s->lock);
      kodo_event_page_discard(&page);
      return kodo_fail(error, KODO_ERR_INTERNAL, 1, "out of memory");
    }
    ++taken;
  }
  pthread_rwlock_unlock(&s->lock);
  return kodo_event_page_finish(&page, has_more, out, error);
}

static kodo_status get_execution(kodo_storage *s, const char *fid, const char *username,
                                 kodo_execution_page *out, kodo_error *error) {
  kodo_execution_page_builder page = {NULL};
  kodo_execution_info info;
  const execution *x;
  kodo_status status;
  if ((status = kodo_check_name(error, "fid", fid)) != KODO_OK) return status;
  if (username && (status = kodo_check_name(error, "username", username)) != KODO_OK) return status;
  pthread_rwlock_rdlock(&s->lock);
  if (!(x = visible(s, fid, username))) {
    pthread_rwlock_unlock(&s->lock);
    return kodo_fail(error, KODO_ERR_NOT_FOUND, 0, "no execution %s", fid);
  }
  summarize(x, &info);
  if (!kodo_execution_page_add(&page, &info)) {
    pthread_rwlock_unlock(&s->lock);
    return kodo_fail(error, KODO_ERR_INTERNAL, 1, "out of memory");
  }
  pthread_rwlock_unlock(&s->lock);
  return kodo_execution_page_finish(&page, 0, out, error);
}

/* Newest first: started_at descending, then fid descending (kodo_execution_page). */
static int newest_first(const void *a, const void *b) {
  const kodo_execution_info *x = a, *y = b;
  if (x->started_at != y->started_at) return x->started_at < y->started_at ? 1 : -1;
  return -strcmp(x->fid, y->fid);
}

static kodo_status list_executions(kodo_storage *s, const kodo_list_request *given,
                                   kodo_execution_page *out, kodo_error *error) {
  kodo_list_request r;
  kodo_execution_page_builder page = {NULL};
  kodo_execution_info *all;
  size_t i, n = 0;
  int ok = 1;
  memset(&r, 0, sizeof r);
  memcpy(&r, given, given->struct_size < sizeof r ? given->struct_size : sizeof r);
  if (r.username && kodo_check_name(error, "username", r.username) != KODO_OK)
    return KODO_ERR_INVALID_ARGUMENT;
  pthread_rwlock_rdlock(&s->lock);
  all = malloc((s->count + 1) * sizeof *all);
  for (i = 0; all && i < s->count; ++i) {
    const execution *x = s->executions[i];
    if (!x->archived && (!r.username || strcmp(x->username, r.username) == 0))
      summarize(x, &all[n++]);
  }
  if (all) qsort(all, n, sizeof *all, newest_first);
  for (i = r.offset; all && ok && i < n && i < r.offset + r.limit; ++i)
    ok = kodo_execution_page_add(&page, &all[i]); /* copies the strings, under the lock */
  pthread_rwlock_unlock(&s->lock);
  free(all);
  if (!all || !ok) {
    kodo_execution_page_finish(&page, 0, NULL, NULL); /* frees what was added */
    return kodo_fail(error, KODO_ERR_INTERNAL, 1, "out of memory");
  }
  return kodo_execution_page_finish(&page, r.offset + r.limit < n, out, error);
}

static kodo_status archive_execution(kodo_storage *s, const char *fid, const char *username,
                                     kodo_error *error) {
  execution *x;
  kodo_status status;
  if ((status = kodo_check_name(error, "fid", fid)) != KODO_OK) return status;
  if (username && (status = kodo_check_name(error, "username", username)) != KODO_OK) return status;
  pthread_rwlock_wrlock(&s->lock);
  if ((x = visible(s, fid, username)) != NULL) x->archived = 1;
  pthread_rwlock_unlock(&s->lock);
  return x ? KODO_OK : kodo_fail(error, KODO_ERR_NOT_FOUND, 0, "no execution %s", fid);
}

static kodo_status purge(kodo_storage *s, double older_than, int64_t *purged_out,
                         kodo_error *error) {
  size_t i, kept = 0;
  int64_t purged = 0;
  (void)error;
  pthread_rwlock_wrlock(&s->lock);
  for (i = 0; i < s->count; ++i) {
    execution *x = s->executions[i];
    if (x->events[x->count - 1]->timestamp < older_than) {
      free_execution(x);
      ++purged;
    } else {
      s->executions[kept++] = x;
    }
  }
  s->count = kept;
  pthread_rwlock_unlock(&s->lock);
  if (purged_out) *purged_out = purged;
  return KODO_OK;
}

/* ---- Descriptor and entry point ---------------------------------------------------------- */

/* By field name: a function the ABI appends later starts as NULL ("not supported"). */
static const kodo_storage_api table = {
    .struct_size = sizeof(kodo_storage_api),
    .open = open_storage,
    .close = close_storage,
    .create_schema = create_schema,
    .append = append,
    .read_events = read_events,
    .get_execution = get_execution,
    .list_executions = list_executions,
    .archive_execution = archive_execution,
    .purge = purge,
};

/* One descriptor per ABI version this plugin speaks (index: version - 1). */
#define MEMORY_C_DESCRIPTOR(VERSION)                                                           \
  {                                                                                            \
    .struct_size = sizeof(kodo_plugin), .abi_version = (VERSION), .kind = KODO_KIND_STORAGE,   \
    .name = "memory-c", .version = "0.1.0",                                                    \
    .description = "in-memory storage written in C11 (example)",                               \
    .capabilities = KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE, \
    .storage = &table                                                                          \
  }
static const kodo_plugin descriptors[] = {MEMORY_C_DESCRIPTOR(KODO_ABI_VERSION_1)};

KODO_DEFINE_ENTRY(host_min, host_max, host, plugin_out, abi_out, error) {
  const uint32_t newest = (uint32_t)(sizeof descriptors / sizeof descriptors[0]);
  const uint32_t agreed =
      kodo_abi_agree(host_min, host_max, KODO_KIND_MIN_ABI(KODO_KIND_STORAGE), newest);
  (void)host;
  *abi_out = agreed ? agreed : newest;
  if (!agreed)
    return kodo_fail(error, KODO_ERR_ABI_MISMATCH, 0,
                     "memory-c speaks ABI versions 1..%u, the host offers %u..%u", (unsigned)newest,
                     (unsigned)host_min, (unsigned)host_max);
  *plugin_out = &descriptors[agreed - 1];
  return KODO_OK;
}
