import Dispatch
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import WarrenCore
import WarrenHTTP
import WarrenManagement
import WarrenServer

/// Any request to the management API (method, path and query, body) gets an HTTP answer with a JSON error or a
/// result, never a crash; the broker under it goes on answering. Input: a method byte, the URI up to the first
/// newline, then the body.
let methods: [HTTPMethod] = [.GET, .PUT, .POST, .DELETE, .HEAD, .PATCH]

final class Fixture: @unchecked Sendable {
  static let shared = Fixture()
  let api: ManagementAPI
  let server: AMQPServer

  init() {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var made: AMQPServer?
    Task {
      made = try await AMQPServer.start(
        host: "127.0.0.1", port: 0, eventLoop: group.next(), logger: Logger(label: "fuzz"), makeBroker: { Broker() })
      done.signal()
    }
    done.wait()
    self.server = made!
    self.api = ManagementAPI(
      amqp: self.server,
      node: ManagementNode(
        name: "warren@fuzz", version: "0", startTime: 0, amqpPort: 1, managementPort: 2, dataDirectory: "/tmp"),
      statistics: MessageStatistics(), definitions: nil, registry: ExchangeRegistry())
  }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
  guard count > 0 else { return 0 }
  let bytes = UnsafeBufferPointer(start: start, count: count)
  let method = methods[Int(bytes[0]) % methods.count]
  let rest = bytes.dropFirst()
  let newline = rest.firstIndex(of: 0x0A) ?? rest.endIndex
  var uri = String(decoding: rest[rest.startIndex..<newline], as: UTF8.self)
  if !uri.hasPrefix("/") { uri = "/api/" + uri }
  let body = newline < rest.endIndex ? Array(rest[(newline + 1)...]) : []
  var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
  head.headers.add(name: "Authorization", value: "Basic Z3Vlc3Q6Z3Vlc3Q=")  // guest:guest
  let request = HTTPRequest(
    head: head, body: ByteBuffer(bytes: body), remote: try? SocketAddress(ipAddress: "127.0.0.1", port: 1))
  let fixture = Fixture.shared
  let done = DispatchSemaphore(value: 0)
  Task {
    let response = await fixture.api.respond(to: request)
    precondition(response.status.code >= 200 && response.status.code < 600)
    if response.status.code >= 400, response.contentType == "application/json" {
      let parsed = try? JSONSerialization.jsonObject(with: Data(response.bytes.readableBytesView))
      precondition(parsed != nil, "an error that is not JSON: \(response.body)")
    }
    // Keep guest able to log in (an input may delete it or change its tags).
    _ = try? await fixture.server.withBroker { broker in
      broker.users["guest"] = User(name: "guest", password: "guest", tags: ["administrator"])
      broker.addVirtualHost("/")
      broker.permissions["guest", default: [:]]["/"] = Permission()
    }
    done.signal()
  }
  done.wait()
  return 0
}
