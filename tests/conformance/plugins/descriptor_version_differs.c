/*
 * descriptor_version_differs.c: agrees on ABI version 1 but hands back a descriptor that
 * says version 2. The loader must refuse it, naming both versions: a descriptor follows the
 * version agreed, or the host would read its fields by the wrong rules.
 */
#include "stub_storage.h"

static const kodo_storage_api table = {
    .struct_size = sizeof(kodo_storage_api),
    .open = stub_open,
    .close = stub_close,
    .create_schema = stub_create_schema,
    .append = stub_append,
    .read_events = stub_read_events,
    .get_execution = stub_get_execution,
};
static const kodo_plugin descriptor = {
    .struct_size = sizeof(kodo_plugin),
    .abi_version = 2u,
    .kind = KODO_KIND_STORAGE,
    .name = "descriptor_version_differs",
    .version = "1.0",
    .description = "agrees on 1, describes itself as 2",
    .storage = &table,
};

KODO_DEFINE_ENTRY(host_min, host_max, host, plugin_out, abi_out, error) {
  (void)host;
  (void)error;
  return stub_entry(host_min, host_max, &descriptor, plugin_out, abi_out);
}
