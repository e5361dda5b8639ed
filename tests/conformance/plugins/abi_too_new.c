/*
 * abi_too_new.c: implements ABI version 99 and, unlike abi_too_old.c, ignores the range the
 * host offers and answers KODO_OK with a descriptor. The loader must still refuse it,
 * naming the file, the symbol and both versions, and never touch the descriptor.
 */
#include <kodo/kodo_plugin.h>

static const kodo_plugin descriptor = {sizeof(kodo_plugin),
                                       99u,
                                       KODO_KIND_STORAGE,
                                       "abi_too_new",
                                       "99.0",
                                       "from a future ABI",
                                       0,
                                       NULL,
                                       0,
                                       NULL,
                                       NULL,
                                       NULL};

KODO_EXPORT kodo_status kodo_plugin_entry(uint32_t host_min, uint32_t host_max,
                                          const kodo_host_api *host, const kodo_plugin **plugin_out,
                                          uint32_t *abi_out, kodo_error *error) {
  (void)host_min;
  (void)host_max;
  (void)host;
  (void)error;
  *abi_out = 99u;
  *plugin_out = &descriptor;
  return KODO_OK;
}
