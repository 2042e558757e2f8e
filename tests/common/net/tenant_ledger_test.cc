#include "common/net/tenant_ledger.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace kvstream::net {
namespace {

TEST(TenantLedgerTest, SessionQuotaPerTenant) {
  TenantLedger ledger;
  net::Tenant lab{"lab", {}, 2, 0};
  net::Tenant other{"other", {}, 0, 0};
  std::vector<TenantLedger::Hold> held;
  for (int i = 0; i < 2; ++i) {
    auto h = ledger.Acquire(lab, 100);
    ASSERT_TRUE(h.ok()) << h.status();
    held.push_back(std::move(*h));
  }
  auto third = ledger.Acquire(lab, 100);
  ASSERT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("tenant 'lab' holds 2 sessions; its quota is "
                                          "max_sessions=2"),
            std::string::npos)
      << third.status();
  // Another tenant, without a quota, is not affected.
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(ledger.Acquire(other, 1 << 30).ok());
  EXPECT_EQ(ledger.sessions("lab"), 2u);
  EXPECT_EQ(ledger.bytes("lab"), 200u);
  held.pop_back();
  EXPECT_EQ(ledger.sessions("lab"), 1u);
  EXPECT_TRUE(ledger.Acquire(lab, 100).ok()) << "a released session frees its place";
}

TEST(TenantLedgerTest, CacheByteQuotaAndMoves) {
  TenantLedger ledger;
  net::Tenant t{"t", {}, 0, 1000};
  auto a = ledger.Acquire(t, 600);
  ASSERT_TRUE(a.ok());
  auto b = ledger.Acquire(t, 500);
  ASSERT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(b.status().message().find("holds 600 cache bytes and this one needs 500; its "
                                      "quota is max_cache_bytes=1000"),
            std::string::npos)
      << b.status();
  TenantLedger::Hold moved = std::move(*a);
  EXPECT_EQ(ledger.bytes("t"), 600u);
  moved = TenantLedger::Hold();
  EXPECT_EQ(ledger.bytes("t"), 0u);
  EXPECT_EQ(ledger.sessions("t"), 0u);
  EXPECT_TRUE(ledger.Acquire(t, 1000).ok());
}

}  // namespace
}  // namespace kvstream::net
