// test_certificate.hpp: a self-signed certificate for localhost, 127.0.0.1 and ::1, made with
// OpenSSL at test time (never committed), and a TLS client for tests on a blocking socket
// with receive and send timeouts, so that a broken server fails a test instead of hanging
// it. The client is a Beast SyncReadStream / SyncWriteStream.
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace kodo::test {

struct CertificateFiles {
  std::string cert;
  std::string key;
};

// Writes <dir>/<name>.crt and <dir>/<name>.key (0600). passphrase: the key is written
// encrypted with it (AES-256-CBC) when not empty.
inline CertificateFiles make_test_certificate(const std::string &dir, const std::string &name,
                                              const std::string &passphrase = "") {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x509 = X509_new();
  if (key == nullptr || x509 == nullptr) throw std::runtime_error("OpenSSL: out of memory");
  X509_set_version(x509, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x509), 1);
  X509_gmtime_adj(X509_getm_notBefore(x509), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x509), 7 * 24 * 3600);
  X509_set_pubkey(x509, key);
  X509_NAME *subject = X509_get_subject_name(x509);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char *>("localhost"), -1, -1, 0);
  X509_set_issuer_name(x509, subject);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x509, x509, nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair<int, const char *>{NID_basic_constraints, "critical,CA:TRUE"},
                            {NID_subject_key_identifier, "hash"},
                            {NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1"}}) {
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
    if (ext == nullptr) throw std::runtime_error("OpenSSL: cannot make a certificate extension");
    X509_add_ext(x509, ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(x509, key, EVP_sha256()) == 0) throw std::runtime_error("OpenSSL: cannot sign");
  CertificateFiles files{dir + "/" + name + ".crt", dir + "/" + name + ".key"};
  std::FILE *cert = std::fopen(files.cert.c_str(), "w");
  std::FILE *pem_key = std::fopen(files.key.c_str(), "w");
  if (cert == nullptr || pem_key == nullptr) throw std::runtime_error("cannot write in " + dir);
  ::chmod(files.key.c_str(), 0600);
  PEM_write_X509(cert, x509);
  if (passphrase.empty())
    PEM_write_PrivateKey(pem_key, key, nullptr, nullptr, 0, nullptr, nullptr);
  else
    PEM_write_PrivateKey(pem_key, key, EVP_aes_256_cbc(),
                         reinterpret_cast<const unsigned char *>(passphrase.data()),
                         static_cast<int>(passphrase.size()), nullptr, nullptr);
  std::fclose(cert);
  std::fclose(pem_key);
  X509_free(x509);
  EVP_PKEY_free(key);
  return files;
}

class TlsClient {
 public:
  // Connects to 127.0.0.1:port, trusting only ca_file. Throws when it cannot connect.
  TlsClient(uint16_t port, const std::string &ca_file, int timeout_s = 30) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0)
      throw std::runtime_error("cannot connect to port " + std::to_string(port));
    timeval tv{timeout_s, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ctx_ = SSL_CTX_new(TLS_client_method());
    // The server ends a connection without close_notify (see core/server_stream.hpp).
    SSL_CTX_set_options(ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set1_host(ssl_, "localhost");
  }
  ~TlsClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  TlsClient(const TlsClient &) = delete;
  TlsClient &operator=(const TlsClient &) = delete;

  SSL *ssl() { return ssl_; }
  int fd() const { return fd_; }

  // Verifies the server's certificate for "localhost"; false with OpenSSL's reason in error.
  bool handshake(std::string *error = nullptr) {
    ERR_clear_error();
    if (SSL_connect(ssl_) == 1) return true;
    if (error != nullptr) {
      char text[256] = "no OpenSSL error queued";
      if (unsigned long code = ERR_get_error()) ERR_error_string_n(code, text, sizeof text);
      *error = text;
    }
    return false;
  }

  template <class Buffers>
  size_t read_some(const Buffers &buffers, boost::system::error_code &ec) {
    const boost::asio::mutable_buffer b = first_nonempty<boost::asio::mutable_buffer>(buffers);
    ec = {};
    if (b.size() == 0) return 0;
    const int n = SSL_read(ssl_, b.data(), static_cast<int>(std::min<size_t>(b.size(), 1 << 30)));
    if (n > 0) return static_cast<size_t>(n);
    ec = SSL_get_error(ssl_, n) == SSL_ERROR_ZERO_RETURN
             ? boost::asio::error::make_error_code(boost::asio::error::eof)
             : boost::asio::error::make_error_code(boost::asio::error::connection_reset);
    return 0;
  }
  template <class Buffers>
  size_t read_some(const Buffers &buffers) {
    boost::system::error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  template <class Buffers>
  size_t write_some(const Buffers &buffers, boost::system::error_code &ec) {
    const boost::asio::const_buffer b = first_nonempty<boost::asio::const_buffer>(buffers);
    ec = {};
    if (b.size() == 0) return 0;
    const int n = SSL_write(ssl_, b.data(), static_cast<int>(std::min<size_t>(b.size(), 1 << 30)));
    if (n > 0) return static_cast<size_t>(n);
    ec = boost::asio::error::make_error_code(boost::asio::error::connection_reset);
    return 0;
  }
  template <class Buffers>
  size_t write_some(const Buffers &buffers) {
    boost::system::error_code ec;
    const size_t n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  // Reads and writes go one buffer at a time; an empty one would read as "nothing moved".
  template <class Buffer, class Buffers>
  static Buffer first_nonempty(const Buffers &buffers) {
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      Buffer b = *it;
      if (b.size() > 0) return b;
    }
    return Buffer();
  }

  int fd_ = -1;
  SSL_CTX *ctx_ = nullptr;
  SSL *ssl_ = nullptr;
};

}  // namespace kodo::test
