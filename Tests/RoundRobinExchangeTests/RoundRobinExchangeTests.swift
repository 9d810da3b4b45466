import AMQPProtocol
import Foundation
import NIOCore
import RoundRobinExchange
import Testing
import WarrenCore

@Suite("The custom exchange type guide")
struct RoundRobinExchangeTests {
  @Test("the guide's exchange type builds, registers and routes each message to the next queue")
  func routes() throws {
    var registry = ExchangeRegistry()
    registry.register(RoundRobinExchangeType())
    let vhost = VirtualHost(name: "/", registry: registry)
    let exchange = try vhost.declareExchange(name: "rr", type: "x-round-robin")
    let queues = try (0..<3).map { i throws -> Queue in
      let queue = try vhost.declareQueue(name: "q\(i)", connection: 1)
      try vhost.bindQueue("q\(i)", to: "rr", routingKey: "", connection: 1)
      return queue
    }
    for i in 0..<9 {
      #expect(
        vhost.publish(Message.make(exchange: "rr", routingKey: "\(i)", body: ByteBuffer()), to: exchange).accepted == 1)
    }
    #expect(queues.map(\.messageCount) == [3, 3, 3])
    #expect(throws: BrokerError.self) {
      try vhost.bindQueue("q0", to: "rr", routingKey: "", arguments: ["x": .int32(1)], connection: 1)
    }
  }

  @Test("the guide shows exactly the code that is built and tested")
  func guideMatchesCode() throws {
    let root = URLPath(#filePath).parent.parent.parent
    let guide = try String(contentsOfFile: root.appending("docs/custom-exchange-type.md"), encoding: .utf8)
    let source = try String(
      contentsOfFile: root.appending("Examples/RoundRobinExchange/RoundRobinExchange.swift"), encoding: .utf8)
    #expect(guide.contains(source.trimmingCharacters(in: .whitespacesAndNewlines)))
  }
}

/// A file path, cut and joined at slashes.
struct URLPath {
  let path: String
  init(_ path: String) { self.path = path }
  var parent: URLPath {
    URLPath(String(self.path[..<(self.path.lastIndex(of: "/") ?? self.path.startIndex)]))
  }
  func appending(_ component: String) -> String { self.path + "/" + component }
}
