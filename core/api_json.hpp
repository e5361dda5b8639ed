// api_json.hpp: the RapidJSON writer the API's routes answer with, and its one string helper
// (api.cpp, api_locks.cpp and api_login.cpp each had their own copy).
#ifndef KODO_CORE_API_JSON_HPP
#define KODO_CORE_API_JSON_HPP

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>

namespace kodo {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

inline void write_string(JsonWriter &w, const std::string &s) {
  w.String(s.c_str(), static_cast<rapidjson::SizeType>(s.size()));
}

}  // namespace kodo

#endif  // KODO_CORE_API_JSON_HPP
