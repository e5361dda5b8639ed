/*
 * entry_fails.c: its entry point fails (it cannot reach something it needs) with a filled
 * error. The loader must report the file, the symbol and the plugin's own message.
 */
#include <kodo/kodo_plugin.h>

/* The message is static, so releasing the error frees nothing. */
static void release_static_error(kodo_error *error) {
  error->message = NULL;
}

KODO_EXPORT kodo_status kodo_plugin_entry(uint32_t host_min, uint32_t host_max,
                                          const kodo_host_api *host, const kodo_plugin **plugin_out,
                                          uint32_t *abi_out, kodo_error *error) {
  (void)host_min;
  (void)host_max;
  (void)host;
  (void)plugin_out;
  *abi_out = KODO_ABI_VERSION;
  error->code = KODO_ERR_UNAVAILABLE;
  error->retryable = 1;
  error->message = "license server license.invalid is unreachable";
  error->release = release_static_error;
  return KODO_ERR_UNAVAILABLE;
}
