#include "core/auth_token.hpp"

#include <kodo/host/error.hpp>
#include "core/json_bounded.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <array>
#include <chrono>
#include <cmath>

namespace kodo {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
// Tokens are small; anything longer is not one of ours and is not decoded at all.
constexpr size_t kMaxTokenBytes = 8192;

int sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

std::string hmac_sha256(const std::string &key, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int length = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char *>(data.data()), data.size(), mac.data(), &length))
    throw Error(KODO_ERR_INTERNAL, "HMAC-SHA256 failed in OpenSSL");
  return std::string(reinterpret_cast<const char *>(mac.data()), length);
}

bool fail(std::string *why, const char *reason) {
  if (why) *why = reason;
  return false;
}

// Checks the header names HS256 (and nothing that would change how it is checked).
bool header_ok(std::string_view encoded, std::string *why) {
  auto json = base64url_decode(encoded);
  if (!json) return fail(why, "the token's header is not base64url");
  rapidjson::Document header;
  if (parse_json_bounded(*json, 8, header) != JsonRead::Ok || !header.IsObject())
    return fail(why, "the token's header is not a JSON object");
  auto alg = header.FindMember("alg");
  if (alg == header.MemberEnd() || !alg->value.IsString() ||
      std::string_view(alg->value.GetString(), alg->value.GetStringLength()) != "HS256")
    return fail(why, "the token is not signed with HS256");
  if (header.HasMember("crit")) return fail(why, "the token names critical extensions");
  return true;
}

bool number(const rapidjson::Value &object, const char *name, double *out) {
  auto it = object.FindMember(name);
  if (it == object.MemberEnd() || !it->value.IsNumber()) return false;
  *out = it->value.GetDouble();
  return std::isfinite(*out);
}

}  // namespace

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) |
                       (uint32_t(uint8_t(bytes[i + 1])) << 8) | uint8_t(bytes[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out += kAlphabet[(v >> shift) & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    if (rest == 2) out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = sextet(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  // Leftover bits must be zero, so that each token has one spelling only.
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string sign_token(const std::string &key, const TokenClaims &claims) {
  if (key.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, "the token signing key is empty");
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("exp");
  w.Double(claims.exp);
  w.Key("iat");
  w.Double(claims.iat);
  w.Key("sub");
  w.String(claims.sub.data(), static_cast<rapidjson::SizeType>(claims.sub.size()));
  if (!claims.fid.empty()) {
    w.Key("fid");
    w.String(claims.fid.data(), static_cast<rapidjson::SizeType>(claims.fid.size()));
  }
  w.EndObject();
  // The header exactly as python-jose writes it.
  std::string token = base64url_encode(R"({"alg":"HS256","typ":"JWT"})") + "." +
                      base64url_encode(std::string_view(buffer.GetString(), buffer.GetSize()));
  return token + "." + base64url_encode(hmac_sha256(key, token));
}

std::optional<TokenClaims> verify_token(const std::string &key, std::string_view token, double now,
                                        std::string *why) {
  auto refuse = [&](const char *reason) -> std::optional<TokenClaims> {
    fail(why, reason);
    return std::nullopt;
  };
  if (key.empty() || token.size() > kMaxTokenBytes) return refuse("the token is not valid");
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
    return refuse("the token is not three base64url parts joined by '.'");
  if (!header_ok(token.substr(0, dot1), why)) return std::nullopt;
  auto signature = base64url_decode(token.substr(dot2 + 1));
  const std::string expected = hmac_sha256(key, token.substr(0, dot2));
  if (!signature || signature->size() != expected.size() ||
      CRYPTO_memcmp(signature->data(), expected.data(), expected.size()) != 0)
    return refuse("the token's signature does not match");
  auto payload = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  rapidjson::Document claims;
  if (!payload || parse_json_bounded(*payload, 8, claims) != JsonRead::Ok || !claims.IsObject())
    return refuse("the token's claims are not a JSON object");
  TokenClaims out;
  auto sub = claims.FindMember("sub");
  if (sub == claims.MemberEnd() || !sub->value.IsString())
    return refuse("the token has no subject");
  out.sub.assign(sub->value.GetString(), sub->value.GetStringLength());
  if (!number(claims, "exp", &out.exp) || !number(claims, "iat", &out.iat))
    return refuse("the token lacks exp or iat");
  if (out.exp <= now) return refuse("the token has expired");
  auto fid = claims.FindMember("fid");
  if (fid != claims.MemberEnd()) {
    if (!fid->value.IsString()) return refuse("the token's fid is not a string");
    out.fid.assign(fid->value.GetString(), fid->value.GetStringLength());
    if (out.fid.empty()) return refuse("the token's fid is empty");
  }
  return out;
}

}  // namespace kodo
