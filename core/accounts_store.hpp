// accounts_store.hpp: what the account stores share inside core (not part of accounts.hpp's
// interface).
#pragma once

#include "core/accounts.hpp"

#include <memory>
#include <string>

namespace kodo {

// 32 hex digits (or a UUID already dashed) as 8-4-4-4-12 lower case; other text unchanged.
std::string dashed_uuid(const std::string &hex);

// accounts_postgres.cpp: kodosumi's roles table on PostgreSQL through libpq.
std::unique_ptr<AccountStore> open_postgres_accounts(const std::string &url);

}  // namespace kodo
