import AMQPProtocol
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import WarrenCore
import WarrenHTTP
import WarrenServer

@testable import WarrenManagement

@Suite("management JSON and listings")
struct ManagementJSONTests {
  @Test("objects keep their member order; strings are escaped; numbers stay integers or doubles")
  func encoding() {
    let value: JSONValue = [
      "z": 1, "a": "q\"u\\o\nte\u{1}", "n": nil, "d": 0.5, "whole": 2.0, "list": [true, false], "o": [:],
    ]
    #expect(
      String(decoding: value.encoded(), as: UTF8.self)
        == #"{"z":1,"a":"q\"u\\o\nte\u0001","n":null,"d":0.5,"whole":2.0,"list":[true,false],"o":{}}"#)
    let parsed = JSONValue.decode(Data(value.encoded()))
    #expect(parsed?["a"]?.stringValue == "q\"u\\o\nte\u{1}")
    #expect(parsed?["z"]?.intValue == 1)
  }

  @Test("not JSON, or not text, decodes to nil")
  func badJSON() {
    for text in ["{bad", "[1,", "", "\u{FF}"] { #expect(JSONValue.decode(Data(text.utf8)) == nil) }
    #expect(JSONValue.decode(Data([0xFF, 0xFE])) == nil)
  }

  static let items: [JSONValue] = (0..<7).map { i in
    ["name": .string("q\(i)"), "messages": .int(Int64((i * 3) % 7)), "stats": ["rate": .double(Double(i) / 2)]]
  }

  @Test("pages count from 1 and report RabbitMQ's counts; out of range is a 400")
  func paging() throws {
    let page = try Listing(query: ["page": "2", "page_size": "3"]).apply(to: Self.items)
    #expect(page["items"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["q3", "q4", "q5"])
    #expect(page["page_count"]?.intValue == 3)
    #expect(page["filtered_count"]?.intValue == 7)
    #expect(page["total_count"]?.intValue == 7)
    #expect(page["item_count"]?.intValue == 3)
    #expect(throws: ManagementError.self) { try Listing(query: ["page": "4", "page_size": "3"]).apply(to: Self.items) }
    #expect(throws: ManagementError.self) { try Listing(query: ["page": "0"]) }
    #expect(throws: ManagementError.self) { try Listing(query: ["page_size": "501"]) }
  }

  @Test("sort by a dotted field, reversed; filter by name or regex; keep only some columns")
  func sortFilterColumns() throws {
    let sorted = try Listing(query: ["sort": "messages"]).apply(to: Self.items)
    #expect(sorted.arrayValue?.compactMap { $0["messages"]?.intValue } == [0, 1, 2, 3, 4, 5, 6])
    let reversed = try Listing(query: ["sort": "stats.rate", "sort_reverse": "true"]).apply(to: Self.items)
    #expect(reversed.arrayValue?.first?["name"]?.stringValue == "q6")
    let named = try Listing(query: ["name": "Q1"]).apply(to: Self.items)
    #expect(named.arrayValue?.compactMap { $0["name"]?.stringValue } == ["q1"])
    let regex = try Listing(query: ["name": "^q[24]$", "use_regex": "true"]).apply(to: Self.items)
    #expect(regex.arrayValue?.compactMap { $0["name"]?.stringValue } == ["q2", "q4"])
    #expect(throws: ManagementError.self) {
      try Listing(query: ["name": "(", "use_regex": "true"]).apply(to: Self.items)
    }
    let columns = try Listing(query: ["columns": "name,stats.rate"]).apply(to: Self.items)
    #expect(columns.arrayValue?.first == ["name": "q0", "stats": ["rate": 0.0]])
  }

  @Test("paths are split before they are decoded: %2F is a vhost named /")
  func paths() throws {
    let request = try ManagementRequest(
      HTTPRequest(
        head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/api/queues/%2F/a%20b?page=2&name=x%26y")))
    #expect(request.segments == ["api", "queues", "/", "a b"])
    #expect(request.query == ["page": "2", "name": "x&y"])
    #expect(throws: ManagementError.self) {
      try ManagementRequest(HTTPRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/api/%zz")))
    }
  }

  @Test("a binding's properties key is its routing key, with a stable hash of its arguments")
  func propertiesKey() {
    let plain = BindingSnapshot(
      vhost: "/", source: "x", destination: "q", destinationType: "queue", routingKey: "a.b", arguments: [:])
    #expect(plain.propertiesKey == "a.b")
    let empty = BindingSnapshot(
      vhost: "/", source: "x", destination: "q", destinationType: "queue", routingKey: "", arguments: [:])
    #expect(empty.propertiesKey == "~")
    let one = BindingSnapshot(
      vhost: "/", source: "x", destination: "q", destinationType: "queue", routingKey: "k",
      arguments: ["x-match": .longString("all"), "a": .int64(1)])
    let same = BindingSnapshot(
      vhost: "/", source: "x", destination: "q", destinationType: "queue", routingKey: "k",
      arguments: ["a": .int64(1), "x-match": .longString("all")])
    #expect(one.propertiesKey.hasPrefix("k~"))
    #expect(one.propertiesKey == same.propertiesKey)
    #expect(!one.propertiesKey.contains("/"))
  }
}

/// The API over a real broker (its event loop, no sockets for HTTP: requests go straight to `respond`).
@Suite("management API over a broker")
struct ManagementAPITests {
  static func withAPI(_ body: (ManagementAPI, Broker.Type) async throws -> Void) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = try await AMQPServer.start(
      host: "127.0.0.1", port: 0, eventLoop: group.next(), logger: Logger(label: "test"), makeBroker: { Broker() })
    let api = ManagementAPI(
      amqp: server,
      node: ManagementNode(
        name: "warren@test", version: "0", startTime: 0, amqpPort: server.localAddress.port ?? 0,
        managementPort: 15672, dataDirectory: "/tmp"),
      statistics: MessageStatistics(), definitions: nil, registry: ExchangeRegistry())
    do {
      try await body(api, Broker.self)
    } catch {
      try? await server.shutdown()
      try? await group.shutdownGracefully()
      throw error
    }
    try await server.shutdown()
    try await group.shutdownGracefully()
  }

  static func call(
    _ api: ManagementAPI, _ method: HTTPMethod, _ uri: String, _ body: String? = nil, user: String = "guest",
    password: String = "guest"
  ) async -> (HTTPResponseStatus, JSONValue?) {
    var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
    head.headers.add(name: "Authorization", value: "Basic " + Data("\(user):\(password)".utf8).base64EncodedString())
    let response = await api.respond(
      to: HTTPRequest(
        head: head, body: ByteBuffer(string: body ?? ""), remote: try? SocketAddress(ipAddress: "127.0.0.1", port: 1)))
    return (response.status, JSONValue.decode(Data(response.bytes.readableBytesView)))
  }

  @Test("create, read, conflict and delete a queue; errors are RabbitMQ's JSON")
  func queueLifecycle() async throws {
    try await Self.withAPI { api, _ in
      #expect(
        await Self.call(api, .PUT, "/api/queues/%2F/q1", #"{"durable":true,"arguments":{"x-max-length":5}}"#).0
          == .created)
      #expect(
        await Self.call(api, .PUT, "/api/queues/%2F/q1", #"{"durable":true,"arguments":{"x-max-length":5}}"#).0
          == .noContent)
      let (status, queue) = await Self.call(api, .GET, "/api/queues/%2F/q1")
      #expect(status == .ok)
      #expect(queue?["arguments"] == ["x-max-length": 5])
      #expect(queue?["durable"] == true)
      let (conflict, error) = await Self.call(api, .PUT, "/api/queues/%2F/q1", #"{"durable":false}"#)
      #expect(conflict == .badRequest)
      #expect(error?["reason"]?.stringValue?.hasPrefix("inequivalent arg 'durable'") == true)
      #expect(
        await Self.call(api, .PUT, "/api/queues/%2F/q2", "{oops").1 == ["error": "bad_request", "reason": "not_json"])
      #expect(await Self.call(api, .DELETE, "/api/queues/%2F/q1").0 == .noContent)
      #expect(
        await Self.call(api, .GET, "/api/queues/%2F/q1").1 == ["error": "Object Not Found", "reason": "Not Found"])
    }
  }

  @Test("publish through an exchange and get the message back, requeued then taken")
  func publishAndGet() async throws {
    try await Self.withAPI { api, _ in
      _ = await Self.call(api, .PUT, "/api/queues/%2F/work", "{}")
      let publish = #"{"routing_key":"work","payload":"hi","payload_encoding":"string","properties":{"priority":3}}"#
      #expect(await Self.call(api, .POST, "/api/exchanges/%2F/amq.default/publish", publish).1 == ["routed": true])
      let get = #"{"count":2,"ackmode":"ack_requeue_true","encoding":"auto"}"#
      let (_, first) = await Self.call(api, .POST, "/api/queues/%2F/work/get", get)
      #expect(first?.arrayValue?.first?["payload"] == "hi")
      #expect(first?.arrayValue?.first?["properties"] == ["priority": 3])
      #expect(first?.arrayValue?.first?["redelivered"] == false)
      let take = #"{"count":2,"ackmode":"ack_requeue_false","encoding":"auto"}"#
      #expect(
        await Self.call(api, .POST, "/api/queues/%2F/work/get", take).1?.arrayValue?.first?["redelivered"] == true)
      #expect(await Self.call(api, .POST, "/api/queues/%2F/work/get", take).1 == [])
    }
  }

  @Test("tags: none is refused, management sees only its vhosts, beyond its tag is 403")
  func tags() async throws {
    try await Self.withAPI { api, _ in
      _ = await Self.call(api, .PUT, "/api/users/plain", #"{"password":"p","tags":""}"#)
      _ = await Self.call(api, .PUT, "/api/users/watcher", #"{"password":"p","tags":["management"]}"#)
      #expect(await Self.call(api, .GET, "/api/overview", user: "plain", password: "p").0 == .unauthorized)
      #expect(await Self.call(api, .GET, "/api/overview", user: "guest", password: "nope").0 == .unauthorized)
      #expect(await Self.call(api, .GET, "/api/vhosts", user: "watcher", password: "p").1 == [])
      #expect(await Self.call(api, .GET, "/api/users", user: "watcher", password: "p").0 == .forbidden)
      #expect(await Self.call(api, .PUT, "/api/vhosts/x", user: "watcher", password: "p").0 == .forbidden)
      #expect(await Self.call(api, .GET, "/api/queues/%2F", user: "watcher", password: "p").0 == .unauthorized)
      _ = await Self.call(api, .PUT, "/api/permissions/%2F/watcher", #"{"configure":"","write":"","read":".*"}"#)
      #expect(await Self.call(api, .GET, "/api/queues/%2F", user: "watcher", password: "p").0 == .ok)
      // Configure permission is checked as AMQP checks it.
      #expect(
        await Self.call(api, .PUT, "/api/queues/%2F/mine", "{}", user: "watcher", password: "p").0 == .unauthorized)
    }
  }

  @Test("deleting a vhost removes its queues and permissions")
  func vhostDeletion() async throws {
    try await Self.withAPI { api, _ in
      #expect(await Self.call(api, .PUT, "/api/vhosts/v1").0 == .created)
      #expect(await Self.call(api, .PUT, "/api/queues/v1/q", "{}").0 == .created)
      #expect(await Self.call(api, .GET, "/api/permissions/v1/guest").0 == .ok)
      #expect(await Self.call(api, .DELETE, "/api/vhosts/v1").0 == .noContent)
      #expect(await Self.call(api, .GET, "/api/queues/v1/q").0 == .notFound)
      #expect(await Self.call(api, .GET, "/api/permissions/v1/guest").0 == .notFound)
      #expect(await Self.call(api, .DELETE, "/api/vhosts/v1").0 == .notFound)
    }
  }

  @Test("a listing of 10,000 queues pages and filters (one snapshot per request)")
  func manyQueues() async throws {
    try await Self.withAPI { api, _ in
      _ = try await api.amqp.withBroker { broker in
        let vhost = broker.vhosts["/"]!
        for i in 0..<10_000 { try vhost.declareQueue(name: String(format: "q%05d", i), connection: 0) }
      }
      let (status, page) = await Self.call(api, .GET, "/api/queues?page=3&page_size=100&name=q0")
      #expect(status == .ok)
      #expect(page?["filtered_count"]?.intValue == 10_000)
      #expect(page?["items"]?.arrayValue?.first?["name"] == "q00200")
      let (_, all) = await Self.call(api, .GET, "/api/queues?columns=name")
      #expect(all?.arrayValue?.count == 10_000)
    }
  }
}
