/*
 * abi_too_old.c: implements ABI version 0, older than any host speaks. It follows the
 * protocol: it names its version and refuses with KODO_ERR_ABI_MISMATCH. The loader must
 * report the file, the symbol and both versions.
 */
#include <kodo/kodo_plugin.h>

KODO_EXPORT kodo_status kodo_plugin_entry(uint32_t host_min, uint32_t host_max,
                                          const kodo_host_api *host, const kodo_plugin **plugin_out,
                                          uint32_t *abi_out, kodo_error *error) {
  (void)host_min;
  (void)host_max;
  (void)host;
  (void)plugin_out;
  (void)error;
  *abi_out = 0;
  return KODO_ERR_ABI_MISMATCH;
}
