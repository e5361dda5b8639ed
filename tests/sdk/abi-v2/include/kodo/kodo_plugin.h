/*
 * kodo_plugin.h: the whole contract between kodo-host and a backend plugin.
 *
 * A plugin is a shared object that exports exactly one symbol, kodo_plugin_entry
 * (KODO_ENTRY_SYMBOL, declared below). The host calls it once after loading, offering the
 * range of ABI versions it speaks; the plugin answers with the version both sides agree on
 * and a static descriptor: its kind, name, declared options, capabilities and a function
 * table.
 *
 * Rules that hold for everything below:
 *  - Plain C only. No C++ type and no exception ever crosses this boundary.
 *  - Every struct that crosses starts with `struct_size`, set by whoever made the struct to
 *    the size it knows. See "Growth" for what a reader does with a size other than its own.
 *  - Output structs (pages, batches, errors) are made by the caller (zeroed, struct_size
 *    set) and filled by the callee; what they point to is allocated by the callee's code
 *    and carries its own `release`; the caller calls it exactly once. Nobody frees memory
 *    that the other side allocated. When a call fails, the output struct is left as the
 *    caller made it (no release to call) and only the error is filled.
 *  - Input pointers are borrowed: valid only for the duration of the call, unless a
 *    comment says otherwise. Copy what you keep.
 *  - Strings are UTF-8 and NUL-terminated. Payloads also carry a length.
 *  - Every function that can fail returns a kodo_status and fills the caller's kodo_error.
 *    There is no global "last error".
 *  - Each function states which calls may run at the same time ("Threading").
 *
 * Growth (how this header changes without breaking a plugin or a host built against an
 * older copy of it):
 *  - Appended without a version change: a field at the end of a struct, a function at the
 *    end of a table, a capability bit, an option type, a status code, a well-known option
 *    name. Every such addition is optional: zero / NULL means what the older struct meant,
 *    and an older peer that never sets it keeps working.
 *  - A new ABI version: anything an older peer could not ignore safely. A new plugin kind
 *    (and its table), a changed meaning of an existing field or function, a removed or
 *    reordered field, a function that becomes required. The new version's number and what
 *    it added are listed under "ABI versions" below.
 *  - Reading a struct the other side made: read only up to its struct_size; a field past
 *    it reads as zero / NULL (kodo::sdk::read_sized does this, KODO_HAS_FIELD tests one
 *    field). A host copies the plugin's descriptor, tables and option specs into zeroed
 *    structs of its own size; the C++ SDK copies requests and the host API likewise.
 *  - Writing a struct the other side made (an error, a page): never past its struct_size.
 *  - Fill tables and descriptors by field name (C designated initializers; in C++ a zeroed
 *    struct assigned field by field), so a field appended later starts as NULL / zero and
 *    a positional initializer does not fail to compile under -Wmissing-field-initializers.
 *  - A function pointer that is NULL, or lies past its table's struct_size, means "not
 *    supported". A capability bit, status code or option type a reader does not know is
 *    ignored (a bit), treated as KODO_ERR_UNKNOWN (a status), or refused at load with a
 *    message naming it (an option type).
 */
#ifndef KODO_PLUGIN_H
#define KODO_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * ABI versions. The host offers [min, max]; the plugin answers the highest version both
 * speak (kodo_abi_agree), so a plugin rebuilt against a newer header still loads in an
 * older host as long as it needs nothing newer.
 *   1: storage and transport. Later additions within version 1 (all optional, see
 *      "Growth"): interrupt and capabilities in both tables; KODO_HAS_FIELD; the entry's
 *      prototype. None changes what a version-1 peer sees, so none needed a new version.
 *   2: the durability kind (kodo_durability_api, kodo_job_host and the job structs), the
 *      table behind kodo_plugin.durability. Storage and transport are unchanged: a plugin of
 *      those kinds agrees on 2 as on 1, and a version-1 plugin still loads.
 * KODO_ABI_VERSION is the newest version this header describes.
 */
#define KODO_ABI_VERSION_1 1u
#define KODO_ABI_VERSION_2 2u
#define KODO_ABI_VERSION KODO_ABI_VERSION_2

/* The oldest ABI version that has `kind` (KODO_KIND_*): a plugin of that kind cannot agree
 * on anything older. A kind added later raises its own minimum here. */
#define KODO_KIND_MIN_ABI(kind) \
  ((kind) == KODO_KIND_DURABILITY ? KODO_ABI_VERSION_2 : KODO_ABI_VERSION_1)

/*
 * The version a plugin that speaks [plugin_min, plugin_max] agrees on with a host offering
 * [host_min, host_max]: the highest both speak, or 0 when the ranges do not meet. A plugin
 * built against this header passes plugin_max = KODO_ABI_VERSION and plugin_min = the
 * oldest version whose features it needs (at least KODO_KIND_MIN_ABI of its kind).
 */
static inline uint32_t kodo_abi_agree(uint32_t host_min, uint32_t host_max, uint32_t plugin_min,
                                      uint32_t plugin_max) {
  uint32_t high = host_max < plugin_max ? host_max : plugin_max;
  uint32_t low = host_min > plugin_min ? host_min : plugin_min;
  return high >= low ? high : 0u;
}

/*
 * Non-zero when the struct at `ptr` (made by the other side, with its struct_size) is large
 * enough to hold `field`: read a field appended after version 1 only when this holds.
 *   if (KODO_HAS_FIELD(table, interrupt) && table->interrupt) table->interrupt(handle);
 */
#define KODO_HAS_FIELD(ptr, field)                                                       \
  ((size_t)((const char *)&(ptr)->field - (const char *)(ptr)) + sizeof((ptr)->field) <= \
   (ptr)->struct_size)

/* The one symbol every plugin exports (see kodo_plugin_entry_fn). */
#define KODO_ENTRY_SYMBOL "kodo_plugin_entry"

#if defined(_WIN32)
#define KODO_EXPORT __declspec(dllexport)
#else
#define KODO_EXPORT __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------------------------ */
/* Status and errors                                                                    */
/* ------------------------------------------------------------------------------------ */

typedef int32_t kodo_status;

#define KODO_OK 0
#define KODO_ERR_UNKNOWN 1          /* anything not covered below */
#define KODO_ERR_INVALID_ARGUMENT 2 /* the caller passed something malformed */
#define KODO_ERR_NOT_FOUND 3        /* e.g. no execution with that fid */
#define KODO_ERR_NOT_SUPPORTED 4    /* the plugin does not implement this */
#define KODO_ERR_TIMEOUT 5          /* a bounded wait ran out (e.g. backpressure) */
#define KODO_ERR_UNAVAILABLE 6      /* a server or file is unreachable; usually retryable */
#define KODO_ERR_ABI_MISMATCH 7     /* the entry point cannot speak any offered version */
#define KODO_ERR_IO 8               /* a read or write failed */
#define KODO_ERR_INTERNAL 9         /* a bug or an exception caught at the boundary */

/*
 * An error, filled by the callee, released by the caller.
 *
 * The caller passes a zeroed kodo_error with struct_size set (KODO_ERROR_INIT). On failure
 * the callee sets code, retryable, message and release (never writing past struct_size).
 * The caller reads it and then calls release (if non-NULL) exactly once. A callee handed an
 * error that is already filled releases it before filling it again. `message` is owned by
 * the error. `retryable` zero means the same call with the same input fails again: the host
 * stops retrying it (a refused event is recorded, not retried forever).
 */
typedef struct kodo_error {
  size_t struct_size;
  kodo_status code;
  int32_t retryable; /* non-zero: the same call may succeed later (server away, timeout) */
  const char *message;
  void (*release)(struct kodo_error *error);
  void *private_data; /* the releaser's, untouched by the caller */
} kodo_error;

#define KODO_ERROR_INIT \
  { sizeof(kodo_error), KODO_OK, 0, NULL, NULL, NULL }

static inline void kodo_error_release(kodo_error *error) {
  if (error && error->release) {
    error->release(error);
    error->release = NULL;
    error->message = NULL;
  }
}

/* ------------------------------------------------------------------------------------ */
/* What the host offers a plugin                                                        */
/* ------------------------------------------------------------------------------------ */

#define KODO_LOG_DEBUG 0
#define KODO_LOG_INFO 1
#define KODO_LOG_WARN 2
#define KODO_LOG_ERROR 3

/*
 * Services of the host. Owned by the host; valid from the entry call until the plugin is
 * unloaded. Threading: every function here may be called from any thread at any time.
 * A plugin reads it up to its struct_size (see "Growth").
 */
typedef struct kodo_host_api {
  size_t struct_size;
  /* The version agreed for this plugin: 0 during the entry call (nothing is agreed yet),
   * the version the entry answered from its return on (so in open and after). */
  uint32_t abi_version;
  void *host_data; /* pass back unchanged */
  /* Writes one log line under the plugin's name. `message` is borrowed. */
  void (*log)(void *host_data, int32_t level, const char *message);
} kodo_host_api;

/* ------------------------------------------------------------------------------------ */
/* Options: declared by the plugin, validated and supplied by the host                  */
/* ------------------------------------------------------------------------------------ */

#define KODO_OPTION_STRING 1
#define KODO_OPTION_INT 2  /* decimal, 64-bit signed */
#define KODO_OPTION_BOOL 3 /* true/false, yes/no, on/off, 1/0 */
#define KODO_OPTION_DOUBLE 4
#define KODO_OPTION_PATH 5 /* a file system path */
#define KODO_OPTION_URL 6  /* scheme://...; may hold a password: usually also SECRET */

#define KODO_OPTION_REQUIRED 0x1 /* open is never called without it */
#define KODO_OPTION_SECRET 0x2   /* the host never prints or logs its value */

/*
 * One declared option. Static data owned by the plugin, valid until unload.
 * `name` is lower-case [a-z0-9_]+. `default_value` is NULL when there is none.
 * `env_name` is NULL or the environment variable that sets it (kodosumi's setting name,
 * such as "KODO_REDIS_URL"); the host also accepts KODO_<KIND>_<NAME> for every option.
 */
typedef struct kodo_option_spec {
  size_t struct_size;
  const char *name;
  int32_t type;  /* KODO_OPTION_* */
  int32_t flags; /* KODO_OPTION_REQUIRED | KODO_OPTION_SECRET */
  const char *default_value;
  const char *env_name;
  const char *description;
} kodo_option_spec;

/*
 * A configured option value handed to open(). Borrowed for the duration of open().
 * The host has already checked that the name is declared and the value parses as its
 * type; defaults are filled in, so every declared option with a default is present.
 */
typedef struct kodo_option {
  size_t struct_size;
  const char *name;
  const char *value;
} kodo_option;

/*
 * Well-known option names: a plugin that declares an option of one of these names gets the
 * meaning below from the host and the conformance kit. Any other name means only what its
 * plugin says.
 *  exec_dir       (PATH, storage): the host's --exec-dir, the directory of per-execution
 *                 data; the host passes it as a default. The kit gives each handle a fresh
 *                 empty directory for every PATH option the user did not set.
 *  url            (URL, storage): the host's --storage-url, passed as a default.
 *  capacity       (INT, transport): how many events the transport holds before publish
 *                 waits; the kit's backpressure case fills exactly this many.
 *  claim_idle_ms  (INT, transport): how long a delivery stays unacked before it is
 *                 redelivered; the kit sets 200 (600000 where a redelivery would spoil an
 *                 exact count) unless the user set it.
 */
#define KODO_OPTION_EXEC_DIR "exec_dir"
#define KODO_OPTION_URL_NAME "url"
#define KODO_OPTION_CAPACITY "capacity"
#define KODO_OPTION_CLAIM_IDLE_MS "claim_idle_ms"

/* ------------------------------------------------------------------------------------ */
/* Events                                                                               */
/* ------------------------------------------------------------------------------------ */

/*
 * One event of one execution.
 *  fid, username: 1..64 bytes of [A-Za-z0-9_.@-], not starting with '.' (the naming rule).
 *       The host checks them, and so must every storage: it refuses an event, fid or
 *       username that breaks the rule with KODO_ERR_INVALID_ARGUMENT (not retryable) and
 *       stores nothing of that call, because a name becomes a path component or a key
 *       (kodo::sdk::check_name in C++, kodo_check_name in kodo/plugin_c.h).
 *  seq: position in the execution, from 0, assigned where the event is made; (fid, seq) is
 *       the event's identity.
 *  timestamp: seconds since the epoch.
 *  kind: one of kodosumi's kinds (meta, inputs, agent, upload, debug, stdout, stderr, lock,
 *        lease, status, error, action, result, final).
 *  payload: payload_len bytes of UTF-8 text followed by a NUL (not counted).
 * Ownership: whoever made the array owns it (see each function).
 */
typedef struct kodo_event {
  size_t struct_size;
  const char *fid;
  const char *username;
  int64_t seq;
  double timestamp;
  const char *kind;
  const char *payload;
  size_t payload_len;
} kodo_event;

/* ------------------------------------------------------------------------------------ */
/* Metrics: figures a plugin reports, shown by the host on /metrics                     */
/* ------------------------------------------------------------------------------------ */

#define KODO_METRIC_GAUGE 1   /* a value that goes up and down (pending entries, up 0/1) */
#define KODO_METRIC_COUNTER 2 /* a total that only grows (reconnects, claims) */

/*
 * One figure. `name` is [a-z0-9_]+ and the host shows it as kodo_<kind>_<name>, e.g.
 * kodo_transport_pending. `labels` is NULL or Prometheus label pairs without braces
 * (consumer="spooler-12"); a name may repeat with different labels. Strings owned by the page.
 */
typedef struct kodo_metric {
  size_t struct_size;
  const char *name;
  const char *help;
  const char *labels;
  int32_t type; /* KODO_METRIC_* */
  double value;
} kodo_metric;

/* Figures from a metrics call. Same ownership as kodo_event_page. */
typedef struct kodo_metric_page {
  size_t struct_size;
  const kodo_metric *const *metrics;
  size_t count;
  void (*release)(struct kodo_metric_page *page);
  void *private_data;
} kodo_metric_page;

/* ------------------------------------------------------------------------------------ */
/* Storage                                                                              */
/* ------------------------------------------------------------------------------------ */

#define KODO_STORAGE_CAP_LIST (1ull << 0)    /* list_executions works */
#define KODO_STORAGE_CAP_ARCHIVE (1ull << 1) /* archive_execution works */
#define KODO_STORAGE_CAP_PURGE (1ull << 2)   /* purge works */

typedef struct kodo_storage kodo_storage; /* the plugin's opaque handle */

/* Which events read_events returns. Borrowed for the call; read up to struct_size. */
typedef struct kodo_read_request {
  size_t struct_size;
  const char *fid;
  const char *username;     /* NULL: whichever user owns fid; another user's: NOT_FOUND */
  int64_t after_seq;        /* events with seq > after_seq; -1 for all */
  const char *const *kinds; /* kind_count kinds to keep; kind_count 0 keeps every kind */
  size_t kind_count;
  size_t limit; /* at most this many events, > 0 */
} kodo_read_request;

/*
 * Events returned by read_events, ordered by seq. The caller zeroes it and sets
 * struct_size; the plugin fills it; everything it points to is owned by the plugin and
 * valid until the caller calls release (exactly once, from any thread).
 */
typedef struct kodo_event_page {
  size_t struct_size;
  const kodo_event *const *events;
  size_t count;
  int32_t has_more; /* non-zero: more matching events follow the last one returned */
  void (*release)(struct kodo_event_page *page);
  void *private_data;
} kodo_event_page;

/* A summary of one execution. "First" and "last" are by seq, not by time. */
typedef struct kodo_execution_info {
  size_t struct_size;
  const char *fid;
  const char *username;
  const char *status; /* payload of the status event of highest seq; "" when none */
  double started_at;  /* timestamp of its event of lowest seq */
  double updated_at;  /* timestamp of its event of highest seq */
  int64_t event_count;
  int64_t last_seq; /* highest seq stored; -1 when none */
} kodo_execution_info;

/* Which executions list_executions returns. Borrowed for the call. */
typedef struct kodo_list_request {
  size_t struct_size;
  const char *username; /* NULL: every user */
  size_t offset;        /* skip this many, in the order of the page (newest first) */
  size_t limit;         /* > 0 */
} kodo_list_request;

/*
 * Executions, newest first: by started_at descending, ties by fid descending (a fid is an
 * ObjectId, which starts with its time). Archived executions are left out. Same ownership
 * as kodo_event_page.
 */
typedef struct kodo_execution_page {
  size_t struct_size;
  const kodo_execution_info *const *executions;
  size_t count;
  int32_t has_more;
  void (*release)(struct kodo_execution_page *page);
  void *private_data;
} kodo_execution_page;

/*
 * Storage function table. Threading: every function except open and close may be called
 * from several threads at once on the same handle (readers run while writers write);
 * close is called once, after every other call on the handle has returned.
 * Names: every function taking a fid or username (directly, in a request or in an event)
 * refuses one that breaks the naming rule (see kodo_event) with KODO_ERR_INVALID_ARGUMENT,
 * itself, even though the host checks them too.
 * Capabilities: a function of a claimed capability is required (the host refuses to load a
 * plugin claiming LIST without list_executions, naming both); an unclaimed one may be NULL
 * or answer KODO_ERR_NOT_SUPPORTED.
 */
typedef struct kodo_storage_api {
  size_t struct_size;

  /* Opens a handle with validated options. *out is owned by the caller until close. */
  kodo_status (*open)(const kodo_option *const *options, size_t option_count,
                      const kodo_host_api *host, kodo_storage **out, kodo_error *error);

  /* Releases the handle and everything it owns. Pages already returned stay valid. */
  void (*close)(kodo_storage *storage);

  /* Makes whatever schema or layout the store needs. Idempotent. */
  kodo_status (*create_schema)(kodo_storage *storage, kodo_error *error);

  /*
   * Stores a batch (events borrowed for the call; may mix executions). All events of one
   * execution in the batch are committed together or not at all. Idempotent on
   * (fid, seq): an event already stored is skipped, so the caller may retry a whole batch
   * after any failure. Returns only after the events are committed.
   * A failure with retryable zero says the batch as given will never be stored (an event
   * breaks a rule); the host then splits it to find the refused events, stores the rest
   * and records what was refused.
   */
  kodo_status (*append)(kodo_storage *storage, const kodo_event *const *events, size_t count,
                        kodo_error *error);

  /*
   * Reads one execution's events in seq order. KODO_ERR_NOT_FOUND for an unknown fid, an
   * archived or purged one, and one owned by another user than request->username.
   */
  kodo_status (*read_events)(kodo_storage *storage, const kodo_read_request *request,
                             kodo_event_page *out, kodo_error *error);

  /*
   * One execution's summary (a page of one). `username` NULL: whichever user owns fid;
   * otherwise another user's fid is KODO_ERR_NOT_FOUND, as are unknown and archived ones.
   */
  kodo_status (*get_execution)(kodo_storage *storage, const char *fid, const char *username,
                               kodo_execution_page *out, kodo_error *error);

  /* KODO_STORAGE_CAP_LIST: executions newest first, with their status. */
  kodo_status (*list_executions)(kodo_storage *storage, const kodo_list_request *request,
                                 kodo_execution_page *out, kodo_error *error);

  /*
   * KODO_STORAGE_CAP_ARCHIVE: removes an execution from reads and listings, keeping its
   * data aside (SQLite renames it sqlite3.db.archive). KODO_ERR_NOT_FOUND if unknown,
   * already archived, or (username non-NULL) owned by another user; NULL: any user.
   */
  kodo_status (*archive_execution)(kodo_storage *storage, const char *fid, const char *username,
                                   kodo_error *error);

  /*
   * KODO_STORAGE_CAP_PURGE: deletes every execution whose last event is older than
   * `older_than` (seconds since the epoch); archived ones too. *purged_out: how many.
   */
  kodo_status (*purge)(kodo_storage *storage, double older_than, int64_t *purged_out,
                       kodo_error *error);

  /*
   * Optional (NULL: none): the plugin's current figures (connection up, reconnects, ...).
   * Called from the host's /metrics handler, concurrently with everything but open/close;
   * it must answer from memory, without a round trip to the server.
   */
  kodo_status (*metrics)(kodo_storage *storage, kodo_metric_page *out, kodo_error *error);

  /* ---- appended within version 1: optional, read with KODO_HAS_FIELD ---- */

  /*
   * Optional (NULL: none). Asks the calls now running on this handle to return soon (in the
   * spirit of sqlite3_interrupt and PQcancel): each returns KODO_ERR_TIMEOUT, retryable, or
   * its normal result if it was about to finish. An interrupted append still commits each
   * execution's events all or nothing. Calls that start after interrupt returns run
   * normally. The host calls it when a call's deadline passes and at shutdown.
   * Threading: from any thread, concurrently with any call but open and close; it must not
   * block (no lock a running call may hold).
   */
  void (*interrupt)(kodo_storage *storage);

  /*
   * Optional (NULL: the descriptor's capabilities). The capabilities of this opened handle,
   * which its options may narrow: a subset of the descriptor's (bits outside it are
   * ignored). Called once, right after open. The host and the kit hold the handle to it.
   */
  uint64_t (*capabilities)(kodo_storage *storage);
} kodo_storage_api;

/* ------------------------------------------------------------------------------------ */
/* Transport                                                                            */
/* ------------------------------------------------------------------------------------ */

#define KODO_TRANSPORT_CAP_GROUPS (1ull << 0)        /* consumers of a group share the work */
#define KODO_TRANSPORT_CAP_REDELIVERY (1ull << 1)    /* unacked deliveries move after idle */
#define KODO_TRANSPORT_CAP_CROSS_PROCESS (1ull << 2) /* producers, consumers in other processes */
#define KODO_TRANSPORT_CAP_FINISH (1ull << 3)        /* finish_execution cleans up */

typedef struct kodo_transport kodo_transport; /* the plugin's opaque handle */
typedef struct kodo_consumer kodo_consumer;   /* one named consumer of a group */

/* One delivered event. */
typedef struct kodo_delivery {
  size_t struct_size;
  uint64_t delivery_id;    /* what ack takes; unique among this consumer's unacked deliveries */
  uint32_t delivery_count; /* 1 on first delivery, more when redelivered */
  const kodo_event *event;
} kodo_delivery;

/* Deliveries from read. Same ownership as kodo_event_page. */
typedef struct kodo_delivery_batch {
  size_t struct_size;
  const kodo_delivery *const *deliveries;
  size_t count;
  void (*release)(struct kodo_delivery_batch *batch);
  void *private_data;
} kodo_delivery_batch;

/*
 * Transport function table.
 * Threading: publish and finish_execution may be called from any number of threads at
 * once. A consumer is used by one thread at a time; different consumers may be used
 * concurrently. close is called once, after every consumer is closed.
 * Groups: a group gets every event published after it was made. Events published before
 * any group exists wait for the first group to be made (a spooler may start after the
 * executors); a group made later does not see them.
 * Order: events of one execution published in seq order are delivered in seq order, and
 * while one consumer holds unacked deliveries of an execution no other consumer is given
 * later events of that execution (so storage sees them in order).
 */
typedef struct kodo_transport_api {
  size_t struct_size;

  kodo_status (*open)(const kodo_option *const *options, size_t option_count,
                      const kodo_host_api *host, kodo_transport **out, kodo_error *error);
  void (*close)(kodo_transport *transport);

  /*
   * Hands a batch to the transport (events borrowed; copied before returning). Returns once
   * the transport holds them. When it is full it waits up to timeout_ms, then fails with
   * KODO_ERR_TIMEOUT (retryable) and has taken none of the batch: nothing is dropped.
   */
  kodo_status (*publish)(kodo_transport *transport, const kodo_event *const *events, size_t count,
                         int32_t timeout_ms, kodo_error *error);

  /*
   * Joins consumer group `group` as `name` (both borrowed; the group is made if new).
   * Without KODO_TRANSPORT_CAP_GROUPS a second live consumer of one group is refused with
   * KODO_ERR_NOT_SUPPORTED.
   */
  kodo_status (*consumer_open)(kodo_transport *transport, const char *group, const char *name,
                               kodo_consumer **out, kodo_error *error);

  /*
   * Leaves the group. Deliveries it did not ack stay pending: with
   * KODO_TRANSPORT_CAP_REDELIVERY they go to another consumer once idle.
   */
  void (*consumer_close)(kodo_consumer *consumer);

  /*
   * Takes up to `max` deliveries, waiting up to block_ms for the first one (0: don't wait).
   * Returns KODO_OK with count 0 when nothing came. Pending deliveries idle longer than the
   * transport's claim time (option claim_idle_ms) are redelivered here first.
   */
  kodo_status (*read)(kodo_consumer *consumer, size_t max, int32_t block_ms,
                      kodo_delivery_batch *out, kodo_error *error);

  /* Acknowledges deliveries (ids borrowed) once their events are stored. Unknown ids are
   * ignored, so an ack may be repeated. */
  kodo_status (*ack)(kodo_consumer *consumer, const uint64_t *delivery_ids, size_t count,
                     kodo_error *error);

  /*
   * KODO_TRANSPORT_CAP_FINISH: the execution's final event is stored; the transport may
   * drop what it keeps for it (its stream), after its own grace period.
   */
  kodo_status (*finish_execution)(kodo_transport *transport, const char *fid, kodo_error *error);

  /* Optional (NULL: none): figures, as for storage (pending, claims, lag, reconnects). */
  kodo_status (*metrics)(kodo_transport *transport, kodo_metric_page *out, kodo_error *error);

  /* ---- appended within version 1: optional, read with KODO_HAS_FIELD ---- */

  /*
   * Optional (NULL: none). As kodo_storage_api.interrupt, for publish, read and ack on this
   * transport and its consumers: a publish interrupted before it took the batch took none
   * of it. Threading: from any thread; it must not block.
   */
  void (*interrupt)(kodo_transport *transport);

  /* Optional (NULL: the descriptor's). As kodo_storage_api.capabilities. */
  uint64_t (*capabilities)(kodo_transport *transport);
} kodo_transport_api;

/* ------------------------------------------------------------------------------------ */
/* Durability (ABI version 2)                                                           */
/* ------------------------------------------------------------------------------------ */

/*
 * A durability backend runs executions as durable jobs (a Temporal workflow, say): the
 * serving host submits a job per launched execution instead of spawning the flow itself, and
 * worker hosts run the jobs through their kodo_job_host. A job that loses its worker runs
 * again elsewhere as the next attempt; pause, resume and cancel reach the running attempt.
 */
#define KODO_DURABILITY_CAP_RETRY (1ull << 0)  /* a job whose worker is lost runs again */
#define KODO_DURABILITY_CAP_PAUSE (1ull << 1)  /* KODO_JOB_SIGNAL_PAUSE / RESUME reach a job */
#define KODO_DURABILITY_CAP_CANCEL (1ull << 2) /* KODO_JOB_SIGNAL_CANCEL reaches a job */
#define KODO_DURABILITY_CAP_QUERY (1ull << 3)  /* describe answers without a live worker */
#define KODO_DURABILITY_CAP_CROSS_PROCESS (1ull << 4) /* submit and workers in other processes */

/* Signals to a submitted job (signal()). */
#define KODO_JOB_SIGNAL_PAUSE 1
#define KODO_JOB_SIGNAL_RESUME 2
#define KODO_JOB_SIGNAL_CANCEL 3

typedef struct kodo_durability kodo_durability; /* the plugin's opaque handle */
typedef struct kodo_job kodo_job;               /* one running attempt of a job, the plugin's */

/*
 * What a job runs: kodosumi's job input. Strings as for events; NULL reads as "". Borrowed
 * for the call that takes or passes it.
 */
typedef struct kodo_job_input {
  size_t struct_size;
  const char *fid; /* the naming rule of kodo_event */
  const char *username;
  const char *app_url;
  const char *entry_point; /* the flow to run, as a direct-mode launch names it */
  const char *panel_url;
  const char *jwt;
  const char *inputs_json;  /* JSON text; NULL: {} */
  const char *extra_json;   /* JSON text; NULL: {} */
  double execution_timeout; /* seconds; <= 0: the backend's default */
} kodo_job_input;

/* What the signals say about a running attempt, as of now. Borrowed for the call. */
typedef struct kodo_job_control {
  size_t struct_size;
  int32_t paused;
  int32_t cancelled;
  const char *cancel_reason; /* who or what cancelled; "" unless cancelled */
} kodo_job_control;

/*
 * How an attempt ended: status "finished" or "error" (error then says why; a cancelled job
 * is "error" with the cancel's reason). Made by the plugin (zeroed, struct_size set), filled
 * by the host's run_job; the plugin calls release exactly once.
 */
typedef struct kodo_job_result {
  size_t struct_size;
  const char *status;
  const char *error; /* NULL or "" unless status is "error" */
  void (*release)(struct kodo_job_result *result);
  void *private_data;
} kodo_job_result;

/* Text returned by the plugin (describe's JSON). Same ownership as kodo_event_page. */
typedef struct kodo_text {
  size_t struct_size;
  const char *text;
  size_t length;
  void (*release)(struct kodo_text *text);
  void *private_data;
} kodo_text;

/* Called on every change of a job's control (see on_control). `control` is borrowed. */
typedef void (*kodo_job_listener)(void *data, const kodo_job_control *control);

/*
 * What a worker host offers the plugin: how to run one attempt. Owned by the host, valid
 * from start_worker until stop_worker has returned.
 * run_job runs `job` (attempt 1, 2, ...; last_heartbeat_json is the previous attempt's last
 * progress, or NULL) and returns when it has ended, with its result filled. KODO_OK: the
 * attempt ended (finished, or error: the flow failed or was cancelled). A failure fails the
 * attempt: retryable, it runs again (a worker stopping hands its jobs back so); not
 * retryable, the job fails for good. Threading: called on a thread of the plugin's, for
 * several jobs at once (up to the plugin's concurrency); `job` is valid until it returns.
 */
typedef struct kodo_job_host {
  size_t struct_size;
  void *host_data; /* pass back unchanged */
  kodo_status (*run_job)(void *host_data, kodo_job *job, const kodo_job_input *input,
                         int32_t attempt, const char *last_heartbeat_json, kodo_job_result *result,
                         kodo_error *error);
} kodo_job_host;

/*
 * Durability function table. Threading: every function but open, close, start_worker and
 * stop_worker may be called from several threads at once; heartbeat and on_control only
 * while run_job runs for their job. close is called once, after stop_worker (if the worker
 * ran) and after every other call has returned.
 * Capabilities: a function of a claimed capability is required (PAUSE, CANCEL: signal;
 * QUERY: describe).
 */
typedef struct kodo_durability_api {
  size_t struct_size;

  kodo_status (*open)(const kodo_option *const *options, size_t option_count,
                      const kodo_host_api *host, kodo_durability **out, kodo_error *error);
  void (*close)(kodo_durability *durability);

  /*
   * Submits the job for input->fid. Idempotent: a fid runs once, however often it is
   * submitted (another submit of a running or ended fid returns KODO_OK, *started_out 0),
   * and `request_id` (borrowed; may be NULL) names this submit, so that one retried after an
   * unknown outcome is recognised: it answers as the first did. *started_out (may be NULL):
   * non-zero when this submit started the job. Returns once the backend has the job
   * durably.
   */
  kodo_status (*submit)(kodo_durability *durability, const kodo_job_input *input,
                        const char *request_id, int32_t *started_out, kodo_error *error);

  /*
   * Sends KODO_JOB_SIGNAL_* to fid's job; `reason` (borrowed, may be NULL) says who or why
   * (a cancel's reason ends up in the job's error). Signals to a job that has not started
   * yet hold it from its first step; to an ended job, or twice, change nothing.
   * KODO_ERR_NOT_FOUND for an unknown fid.
   */
  kodo_status (*signal)(kodo_durability *durability, const char *fid, int32_t signal,
                        const char *reason, kodo_error *error);

  /*
   * fid's job as the backend knows it, with no worker needed: a JSON object with at least
   * "fid", "state" (pending, running, paused, cancelling, completed, failed, cancelled),
   * "attempt" and "last_heartbeat" (JSON or null). KODO_ERR_NOT_FOUND for an unknown fid.
   */
  kodo_status (*describe)(kodo_durability *durability, const char *fid, kodo_text *out,
                          kodo_error *error);

  /*
   * Makes this handle a worker: it takes jobs and runs each through job_host->run_job, on
   * threads of its own, until stop_worker. Returns once it is taking jobs.
   */
  kodo_status (*start_worker)(kodo_durability *durability, const kodo_job_host *job_host,
                              kodo_error *error);

  /*
   * Stops taking jobs and hands the running ones back: each sees a cancel (reason: the
   * worker is stopping) and its attempt runs again elsewhere. Returns once every run_job
   * has returned.
   */
  void (*stop_worker)(kodo_durability *durability);

  /* The job's progress (JSON text, borrowed), carried by its next heartbeat and handed to
   * the next attempt as last_heartbeat_json. */
  kodo_status (*heartbeat)(kodo_job *job, const char *progress_json, kodo_error *error);

  /*
   * Calls listener(data, control) at once with the job's control and then on every change,
   * from a thread of the plugin's. Set once per job. listener NULL detaches: on_control
   * returns once no call is in flight, and none follows. The host detaches before its
   * run_job returns (so `data` may die with it); the plugin calls nothing after that.
   */
  kodo_status (*on_control)(kodo_job *job, kodo_job_listener listener, void *data,
                            kodo_error *error);

  /* Optional (NULL: none): figures, as for storage (jobs running, done, server up). */
  kodo_status (*metrics)(kodo_durability *durability, kodo_metric_page *out, kodo_error *error);

  /* Optional (NULL: none). As kodo_storage_api.interrupt, for submit, signal, describe. */
  void (*interrupt)(kodo_durability *durability);

  /* Optional (NULL: the descriptor's). As kodo_storage_api.capabilities. */
  uint64_t (*capabilities)(kodo_durability *durability);
} kodo_durability_api;

/* ------------------------------------------------------------------------------------ */
/* The plugin descriptor and the entry point                                            */
/* ------------------------------------------------------------------------------------ */

#define KODO_KIND_STORAGE 1
#define KODO_KIND_TRANSPORT 2
#define KODO_KIND_DURABILITY 3 /* since ABI version 2 */

/*
 * What a plugin is. Static data owned by the plugin, valid until unload.
 * Exactly the table of its kind is non-NULL. `abi_version` is the version the entry agreed
 * on (a plugin answering several versions keeps one descriptor per version, or fills one
 * before answering: the host refuses a descriptor whose abi_version is not the agreed one).
 */
typedef struct kodo_plugin {
  size_t struct_size;
  uint32_t abi_version; /* the version this descriptor follows */
  int32_t kind;         /* KODO_KIND_* */
  const char *name;     /* short name, as in `storage = sqlite` */
  const char *version;  /* the plugin's own version */
  const char *description;
  uint64_t capabilities; /* KODO_STORAGE_CAP_*, KODO_TRANSPORT_CAP_* or KODO_DURABILITY_CAP_* */
  const kodo_option_spec *const *options;
  size_t option_count;
  const kodo_storage_api *storage;
  const kodo_transport_api *transport;
  const kodo_durability_api *durability; /* since version 2; NULL in version 1 */
} kodo_plugin;

/*
 * The entry point, exported as KODO_ENTRY_SYMBOL. Called once per load, before anything
 * else. The host offers ABI versions host_min..host_max. The plugin sets *abi_out to the
 * highest version both speak (kodo_abi_agree) and, when there is one, sets *plugin_out to
 * its descriptor for that version and returns KODO_OK. When the ranges do not meet it sets
 * *abi_out to the newest version it speaks, leaves *plugin_out alone and returns
 * KODO_ERR_ABI_MISMATCH, so the host can name both sides' versions.
 * `host` is owned by the host and stays valid until unload (its abi_version is 0 during
 * this call). Threading: never concurrently with anything else of this plugin.
 *
 * In C, define it with KODO_DEFINE_ENTRY so the compiler checks it against the prototype:
 *   KODO_DEFINE_ENTRY(host_min, host_max, host, plugin_out, abi_out, error) {
 *     uint32_t agreed = kodo_abi_agree(host_min, host_max,
 *                                      KODO_KIND_MIN_ABI(KODO_KIND_STORAGE), KODO_ABI_VERSION);
 *     (void)host; (void)error;
 *     *abi_out = agreed ? agreed : KODO_ABI_VERSION;
 *     if (!agreed) return KODO_ERR_ABI_MISMATCH;
 *     *plugin_out = &descriptor; (its abi_version: agreed; one descriptor per version)
 *     return KODO_OK;
 *   }
 */
typedef kodo_status (*kodo_plugin_entry_fn)(uint32_t host_min, uint32_t host_max,
                                            const kodo_host_api *host,
                                            const kodo_plugin **plugin_out, uint32_t *abi_out,
                                            kodo_error *error);

/* The arguments name the parameters, so they cannot be parenthesized. */
/* NOLINTBEGIN(bugprone-macro-parentheses) */
#define KODO_DEFINE_ENTRY(host_min, host_max, host, plugin_out, abi_out, error) \
  KODO_EXPORT kodo_status kodo_plugin_entry(                                    \
      uint32_t host_min, uint32_t host_max, const kodo_host_api *host,          \
      const kodo_plugin **plugin_out, uint32_t *abi_out, kodo_error *error)
/* NOLINTEND(bugprone-macro-parentheses) */

/* The prototype: a definition with another signature does not compile. */
KODO_EXPORT kodo_status kodo_plugin_entry(uint32_t host_min, uint32_t host_max,
                                          const kodo_host_api *host, const kodo_plugin **plugin_out,
                                          uint32_t *abi_out, kodo_error *error);

#ifdef __cplusplus
}
#endif

#endif /* KODO_PLUGIN_H */
