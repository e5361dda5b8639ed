// tls_context.hpp: the server's TLS setup (OpenSSL through Asio), made once from the
// certificate and key files given with --tls-cert / --tls-key.
//
// A modern default, not a tunable one: TLS 1.2 and 1.3 only; on 1.2 only ECDHE key exchange
// with AEAD ciphers (AES-GCM, ChaCha20-Poly1305), the server's order preferred; no
// compression (CRIME), no renegotiation, no session tickets (their key would live as long as
// the process and undo forward secrecy).
#pragma once

#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <string>

namespace kodo {

// Loads the certificate chain (PEM, leaf first) and its private key (PEM, unencrypted).
// Throws kodo::Error(KODO_ERR_INVALID_ARGUMENT) naming the file when either is missing,
// unreadable, not PEM, encrypted, or when the key does not belong to the certificate.
std::shared_ptr<boost::asio::ssl::context> make_tls_server_context(const std::string &cert_file,
                                                                   const std::string &key_file);

}  // namespace kodo
