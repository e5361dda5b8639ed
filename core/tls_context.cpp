// tls_context.cpp: see tls_context.hpp.
#include "core/tls_context.hpp"

#include <kodo/host/error.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <system_error>

namespace kodo {

namespace {

// TLS 1.2 suites with forward secrecy and authenticated encryption; TLS 1.3's own suites are
// all of that already and keep OpenSSL's default order.
const char kTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// OpenSSL's queued errors, oldest first, as one line; the queue is left empty.
std::string openssl_errors() {
  std::string out;
  while (unsigned long code = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

// A clear "cannot read" before OpenSSL's own, less readable, message.
void check_readable(const std::string &what, const std::string &path) {
  if (path.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, "TLS " + what + " file: no path given");
  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (f == nullptr)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "TLS " + what + " file '" + path + "': " + std::generic_category().message(errno));
  (void)std::fclose(f);
}

// An encrypted key would make OpenSSL prompt on the terminal; refuse it instead.
int refuse_passphrase(char *, int, int, void *) {
  return 0;
}

}  // namespace

std::shared_ptr<boost::asio::ssl::context> make_tls_server_context(const std::string &cert_file,
                                                                   const std::string &key_file) {
  namespace ssl = boost::asio::ssl;
  check_readable("certificate", cert_file);
  check_readable("key", key_file);
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX *ctx = context->native_handle();
  ERR_clear_error();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1)
    throw Error(KODO_ERR_INTERNAL, "TLS setup: " + openssl_errors());
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);

  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "TLS certificate file '" + cert_file +
                    "' holds no usable PEM certificate: " + openssl_errors());
  // Read apart from its use, so that "not a key" and "not this certificate's key" differ.
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY *)> key(nullptr, EVP_PKEY_free);
  if (std::unique_ptr<BIO, int (*)(BIO *)> in(BIO_new_file(key_file.c_str(), "r"), BIO_free); in)
    key.reset(PEM_read_bio_PrivateKey(in.get(), nullptr, refuse_passphrase, nullptr));
  if (!key)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "TLS key file '" + key_file +
                    "' holds no usable PEM private key (encrypted keys are not supported): " +
                    openssl_errors());
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1)
    throw Error(KODO_ERR_INVALID_ARGUMENT, "TLS key file '" + key_file +
                                               "' does not match the certificate in '" + cert_file +
                                               "': " + openssl_errors());
  return context;
}

}  // namespace kodo
