/* The ABI header must stay plain C: a backend may be written in C, or in any language whose
 * FFI reads C headers. This file is built as strict C99 with warnings as errors, so a C++-ism
 * slipping into kodo_plugin.h breaks the build; running it checks a few of its promises. */
#include <kodo/kodo_plugin.h>
#include <kodo/plugin_c.h>

#include <stdio.h>
#include <string.h>

static int failures = 0;

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "FAIL: %s\n", what);
    ++failures;
  }
}

static void release_message(kodo_error *error) {
  error->private_data = NULL;
}

static kodo_status refuse(uint32_t host_min, uint32_t host_max, const kodo_host_api *host,
                          const kodo_plugin **plugin_out, uint32_t *abi_out, kodo_error *error) {
  (void)host_min;
  (void)host_max;
  (void)host;
  (void)plugin_out;
  *abi_out = KODO_ABI_VERSION;
  error->code = KODO_ERR_ABI_MISMATCH;
  error->message = "refused";
  error->release = release_message;
  error->private_data = error;
  return KODO_ERR_ABI_MISMATCH;
}

int main(void) {
  kodo_error error = KODO_ERROR_INIT;
  kodo_event event;
  kodo_read_request request;
  kodo_storage_api storage;
  kodo_plugin_entry_fn entry = refuse;
  const kodo_plugin *plugin = NULL;
  uint32_t abi = 0;

  check(error.struct_size == sizeof(kodo_error), "KODO_ERROR_INIT sets struct_size");
  check(error.code == KODO_OK && error.message == NULL && error.release == NULL,
        "KODO_ERROR_INIT leaves the error empty");

  memset(&event, 0, sizeof event);
  event.struct_size = sizeof event;
  event.fid = "exec-1";
  event.payload = "{}";
  event.payload_len = 2;
  check(event.payload[event.payload_len] == '\0', "payload is NUL-terminated");

  memset(&request, 0, sizeof request);
  request.struct_size = sizeof request;
  request.after_seq = -1;
  check(request.kinds == NULL && request.kind_count == 0, "a zeroed request keeps every kind");

  /* Tables grow at the end: the first function sits right after struct_size. */
  check(offsetof(kodo_storage_api, open) == sizeof(size_t), "open follows struct_size");
  memset(&storage, 0, sizeof storage);
  check(storage.purge == NULL, "a zeroed table supports nothing");

  check(entry(1, 1, NULL, &plugin, &abi, &error) == KODO_ERR_ABI_MISMATCH, "entry refuses");
  check(abi == KODO_ABI_VERSION && plugin == NULL, "a refusal names its version only");
  kodo_error_release(&error);
  check(error.release == NULL && error.message == NULL, "kodo_error_release clears the error");
  kodo_error_release(&error); /* a second release is harmless */

  check(strcmp(KODO_ENTRY_SYMBOL, "kodo_plugin_entry") == 0, "the entry symbol's name");
  check(kodo_abi_agree(1, 3, 1, 2) == 2 && kodo_abi_agree(1, 1, 1, 2) == 1,
        "the highest version both speak is agreed");
  check(kodo_abi_agree(3, 4, 1, 2) == 0, "ranges that do not meet agree on nothing");
  check(KODO_KIND_MIN_ABI(KODO_KIND_STORAGE) == KODO_ABI_VERSION_1, "storage exists since 1");
  check(KODO_KIND_MIN_ABI(KODO_KIND_TRANSPORT) == KODO_ABI_VERSION_1, "transport exists since 1");
  check(KODO_KIND_MIN_ABI(KODO_KIND_DURABILITY) == KODO_ABI_VERSION_2, "durability since 2");
  {
    kodo_durability_api durability;
    kodo_job_input input;
    memset(&durability, 0, sizeof durability);
    memset(&input, 0, sizeof input);
    durability.struct_size = offsetof(kodo_durability_api, metrics);
    check(KODO_HAS_FIELD(&durability, on_control) && !KODO_HAS_FIELD(&durability, interrupt),
          "the durability table grows as the others do");
    input.struct_size = sizeof input;
    check(input.fid == NULL && input.execution_timeout == 0.0, "a job input starts empty");
  }
  request.struct_size = offsetof(kodo_read_request, kinds);
  check(KODO_HAS_FIELD(&request, after_seq) && !KODO_HAS_FIELD(&request, kinds),
        "KODO_HAS_FIELD stops at struct_size");
  storage.struct_size = offsetof(kodo_storage_api, interrupt);
  check(!KODO_HAS_FIELD(&storage, interrupt), "a version-1 table has no interrupt");
  check((KODO_STORAGE_CAP_LIST & KODO_STORAGE_CAP_ARCHIVE) == 0, "capability flags are distinct");

  /* plugin_c.h: the naming rule, a filled error, a page that owns its copies. */
  check(kodo_name_problem("alice@example.org") == NULL, "a good name passes");
  check(kodo_name_problem(".hidden") != NULL && kodo_name_problem("a/b") != NULL,
        "a bad name is named");
  check(kodo_check_name(&error, "fid", "../etc") == KODO_ERR_INVALID_ARGUMENT && error.message &&
            strstr(error.message, "invalid fid") != NULL,
        "kodo_check_name fills the error");
  kodo_error_release(&error);
  {
    kodo_event_page_builder builder = {NULL};
    kodo_event_page page;
    memset(&page, 0, sizeof page);
    page.struct_size = sizeof page;
    event.username = "alice";
    event.kind = "stdout";
    check(kodo_event_page_add(&builder, &event), "an event is copied into the page");
    check(kodo_event_page_finish(&builder, 1, &page, &error) == KODO_OK && page.count == 1 &&
              page.has_more && strcmp(page.events[0]->payload, "{}") == 0 &&
              page.events[0]->payload != event.payload,
          "the page holds its own copy");
    page.release(&page);
    check(page.release == NULL && page.count == 0, "release empties the page");
  }

  if (failures == 0) printf("kodo_plugin.h compiles and behaves as C99\n");
  return failures == 0 ? 0 : 1;
}
