// The nats-server fixture (nats_fixture.hpp) against the real server and the
// real client library: what the bridge's tests will lean on, proved first.
// JetStream with file storage must survive a SIGKILL and a restart of the
// one server, and a 3-replica stream must take publishes again once one of
// three nodes is SIGKILLed.
//
// nats_Close() is never called: it tears down the library's global state,
// which a later test in the same process would still need.
#include "nats_fixture.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using shmbus::test::NatsCluster;
using shmbus::test::NatsServer;
using Clock = std::chrono::steady_clock;

// Ownership of the library's objects, so a failed ASSERT leaks nothing.
struct NatsDeleter {
  void operator()(natsConnection* p) const { natsConnection_Destroy(p); }
  void operator()(natsOptions* p) const { natsOptions_Destroy(p); }
  void operator()(jsCtx* p) const { jsCtx_Destroy(p); }
  void operator()(jsStreamInfo* p) const { jsStreamInfo_Destroy(p); }
  void operator()(jsPubAck* p) const { jsPubAck_Destroy(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, NatsDeleter>;

// A failure as the library reports it: status, JetStream code, last error text.
std::string why(natsStatus s, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string text = natsStatus_GetText(s);
  if (jerr != 0) text += " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")";
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') text += ": " + std::string(last);
  return text;
}

std::string cluster_logs(NatsCluster& c, int nodes) {
  std::string s;
  for (int i = 0; i < nodes; ++i)
    s += "--- node " + std::to_string(i) + " ---\n" + c.node(i).log();
  return s;
}

Owned<jsCtx> jetstream(natsConnection* nc, int64_t wait_ms = 5000) {
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = wait_ms;
  jsCtx* js = nullptr;
  if (natsConnection_JetStream(&js, nc, &o) != NATS_OK) return nullptr;
  return Owned<jsCtx>(js);
}

// A stream on one subject, kept in files.
natsStatus add_stream(jsCtx* js, const char* name, const char* subject, int64_t replicas,
                      jsErrCode* jerr) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subjects[] = {subject};
  cfg.Name = name;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = replicas;
  jsStreamInfo* si = nullptr;
  const natsStatus s = js_AddStream(&si, js, &cfg, nullptr, jerr);
  Owned<jsStreamInfo> owned(si);
  return s;
}

TEST(NatsFixture, SingleServerStreamSurvivesKill9AndRestart) {
  NatsServer nats;
  ASSERT_TRUE(nats.start()) << nats.log();
  ASSERT_TRUE(nats.running());
  const int port = nats.port();

  {
    natsConnection* raw = nullptr;
    ASSERT_EQ(natsConnection_ConnectTo(&raw, nats.url().c_str()), NATS_OK) << why(NATS_ERR);
    Owned<natsConnection> nc(raw);
    Owned<jsCtx> js = jetstream(nc.get());
    ASSERT_NE(js, nullptr);
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = add_stream(js.get(), "FX_A", "fx.a", 1, &jerr);
    ASSERT_EQ(s, NATS_OK) << why(s, jerr);
    for (int i = 0; i < 10; ++i) {
      const std::string data = "message " + std::to_string(i);
      jsPubAck* ack = nullptr;
      s = js_Publish(&ack, js.get(), "fx.a", data.data(), static_cast<int>(data.size()), nullptr,
                     &jerr);
      Owned<jsPubAck> owned(ack);
      ASSERT_EQ(s, NATS_OK) << why(s, jerr);
      EXPECT_EQ(ack->Sequence, static_cast<uint64_t>(i + 1));
    }
    // The client is still connected when the server dies, as in real use.
    // (Destroying it then took up to 2 s at times, nats.c's default
    // reconnect wait, apparently waited out first.)
    nats.kill9();
    EXPECT_FALSE(nats.running());
  }

  ASSERT_TRUE(nats.restart()) << nats.log();
  EXPECT_EQ(nats.port(), port);  // where the clients expect it

  natsConnection* raw = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&raw, nats.url().c_str()), NATS_OK) << why(NATS_ERR);
  Owned<natsConnection> nc(raw);
  Owned<jsCtx> js = jetstream(nc.get());
  ASSERT_NE(js, nullptr);
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetStreamInfo(&si, js.get(), "FX_A", nullptr, &jerr);
  Owned<jsStreamInfo> info(si);
  ASSERT_EQ(s, NATS_OK) << why(s, jerr) << "\n" << nats.log();
  EXPECT_EQ(info->State.Msgs, 10U);
  EXPECT_EQ(info->State.LastSeq, 10U);
}

// A server that cannot bind its port exits at once; start() must say so
// quickly (no waiting out the timeout) and keep the reason in the log.
TEST(NatsFixture, TakenPortFailsFastWithTheReasonLogged) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);

  NatsServer::Options o;
  o.port = ntohs(a.sin_port);  // given, so never re-picked
  NatsServer nats(o);
  const auto t0 = Clock::now();
  EXPECT_FALSE(nats.start(std::chrono::seconds(20)));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  EXPECT_FALSE(nats.running());
  EXPECT_NE(nats.log().find("address already in use"), std::string::npos) << nats.log();
  ::close(fd);
}

// The hard case for a client: the node it is connected to is also the
// stream's leader, so it must reconnect elsewhere and wait for an election.
TEST(NatsFixture, ClusterStreamTakesPublishesAfterANodeIsKilled) {
  constexpr int kNodes = 3;
  NatsCluster cluster(kNodes);
  const auto t_start = Clock::now();
  ASSERT_TRUE(cluster.start()) << cluster_logs(cluster, kNodes);
  const auto started_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t_start).count();
  for (int i = 0; i < kNodes; ++i)
    ASSERT_TRUE(cluster.node(i).running());

  // The stream, made through any node; its leader is the node to kill.
  std::string leader;
  {
    natsConnection* raw = nullptr;
    ASSERT_EQ(natsConnection_ConnectTo(&raw, cluster.urls().c_str()), NATS_OK) << why(NATS_ERR);
    Owned<natsConnection> setup(raw);
    Owned<jsCtx> js = jetstream(setup.get());
    ASSERT_NE(js, nullptr);
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = add_stream(js.get(), "FX_R3", "fx.r3", kNodes, &jerr);
    ASSERT_EQ(s, NATS_OK) << why(s, jerr) << "\n" << cluster_logs(cluster, kNodes);
    jsStreamInfo* si = nullptr;
    s = js_GetStreamInfo(&si, js.get(), "FX_R3", nullptr, &jerr);
    Owned<jsStreamInfo> info(si);
    ASSERT_EQ(s, NATS_OK) << why(s, jerr);
    ASSERT_NE(info->Cluster, nullptr);
    ASSERT_NE(info->Cluster->Leader, nullptr);
    leader = info->Cluster->Leader;
  }
  int victim = -1;
  for (int i = 0; i < kNodes; ++i)
    if ("n" + std::to_string(i) == leader) victim = i;
  ASSERT_GE(victim, 0) << "stream leader " << leader << " is none of the nodes";

  // The client knows all three nodes and tries the leader's first.
  natsOptions* raw_opts = nullptr;
  ASSERT_EQ(natsOptions_Create(&raw_opts), NATS_OK);
  Owned<natsOptions> opts(raw_opts);
  std::vector<std::string> urls = cluster.url_list();
  std::swap(urls[0], urls[static_cast<std::size_t>(victim)]);
  std::vector<const char*> servers;
  for (const std::string& u : urls)
    servers.push_back(u.c_str());
  ASSERT_EQ(natsOptions_SetServers(opts.get(), servers.data(), static_cast<int>(servers.size())),
            NATS_OK);
  ASSERT_EQ(natsOptions_SetNoRandomize(opts.get(), true), NATS_OK);
  ASSERT_EQ(natsOptions_SetAllowReconnect(opts.get(), true), NATS_OK);
  ASSERT_EQ(natsOptions_SetMaxReconnect(opts.get(), -1), NATS_OK);
  ASSERT_EQ(natsOptions_SetReconnectWait(opts.get(), 100), NATS_OK);
  natsConnection* raw_nc = nullptr;
  ASSERT_EQ(natsConnection_Connect(&raw_nc, opts.get()), NATS_OK) << why(NATS_ERR);
  Owned<natsConnection> nc(raw_nc);
  char connected[256] = {};
  ASSERT_EQ(natsConnection_GetConnectedUrl(nc.get(), connected, sizeof connected), NATS_OK);
  EXPECT_EQ(std::string(connected), cluster.node(victim).url());
  // A short wait per request, so the retry loop below tries again often.
  Owned<jsCtx> js = jetstream(nc.get(), 2000);
  ASSERT_NE(js, nullptr);

  // Each message has an id: a publish that timed out here may still have
  // been stored there, and its retry is then a duplicate the stream drops.
  std::map<std::string, int> errors;  // what a publish met while there was no leader
  const auto publish = [&](int i, Clock::time_point deadline) {
    const std::string id = "fx-r3-" + std::to_string(i);
    const std::string data = "message " + std::to_string(i);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id.c_str();
    for (;;) {
      jsPubAck* ack = nullptr;
      jsErrCode e = static_cast<jsErrCode>(0);
      const natsStatus st =
          js_Publish(&ack, js.get(), "fx.r3", data.data(), static_cast<int>(data.size()), &po, &e);
      Owned<jsPubAck> owned(ack);
      if (st == NATS_OK) return true;
      ++errors[why(st, e)];
      if (Clock::now() >= deadline) return false;
      // Polling for a new leader: the client has no event for it.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(publish(i, Clock::now() + std::chrono::seconds(10)));
  errors.clear();  // only what the kill causes is of interest

  cluster.node(victim).kill9();
  ASSERT_FALSE(cluster.node(victim).running());
  const auto t_kill = Clock::now();
  const auto deadline = t_kill + std::chrono::seconds(30);
  ASSERT_TRUE(publish(5, deadline)) << cluster_logs(cluster, kNodes);
  const auto resumed_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t_kill).count();
  for (int i = 6; i < 10; ++i)
    ASSERT_TRUE(publish(i, deadline)) << cluster_logs(cluster, kNodes);

  // The stream info is the new leader's answer: retried like a publish.
  Owned<jsStreamInfo> after;
  natsStatus s = NATS_OK;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  for (;;) {
    jsStreamInfo* si = nullptr;
    s = js_GetStreamInfo(&si, js.get(), "FX_R3", nullptr, &jerr);
    after.reset(si);
    if (s == NATS_OK || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(s, NATS_OK) << why(s, jerr);
  EXPECT_EQ(after->State.Msgs, 10U);
  EXPECT_EQ(after->State.LastSeq, 10U);
  ASSERT_NE(after->Cluster, nullptr);
  ASSERT_NE(after->Cluster->Leader, nullptr);
  EXPECT_NE(std::string(after->Cluster->Leader), leader);
  ASSERT_EQ(natsConnection_GetConnectedUrl(nc.get(), connected, sizeof connected), NATS_OK);
  EXPECT_NE(std::string(connected), cluster.node(victim).url());

  // For whoever reads the run: how long the cluster took, and what the
  // client saw in between.
  std::cerr << "[ NatsFixture ] cluster ready in " << started_ms << " ms; killed " << leader
            << " (stream leader, the client's server); publishing resumed after " << resumed_ms
            << " ms, on " << connected << " with stream leader " << after->Cluster->Leader << "\n";
  for (const auto& [text, n] : errors)
    std::cerr << "[ NatsFixture ]   " << n << " x " << text << "\n";
}

}  // namespace
