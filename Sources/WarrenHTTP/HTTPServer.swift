import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// A response of the HTTP listener.
public struct HTTPResponse: Sendable {
  public var status: HTTPResponseStatus
  public var contentType: String
  /// The body's bytes.
  public var bytes: ByteBuffer
  /// Further headers (`WWW-Authenticate`, ...).
  public var headers: [(String, String)]

  public init(
    status: HTTPResponseStatus = .ok, contentType: String = "text/plain; charset=utf-8", body: String,
    headers: [(String, String)] = []
  ) {
    self.init(status: status, contentType: contentType, bytes: ByteBuffer(string: body), headers: headers)
  }

  public init(
    status: HTTPResponseStatus = .ok, contentType: String, bytes: ByteBuffer, headers: [(String, String)] = []
  ) {
    self.status = status
    self.contentType = contentType
    self.bytes = bytes
    self.headers = headers
  }

  /// The body as text.
  public var body: String { String(buffer: self.bytes) }

  /// A JSON body built with an encoder (never by pasting text into quotes).
  public static func json(_ object: [String: String], status: HTTPResponseStatus = .ok) -> HTTPResponse {
    let data = (try? JSONEncoder().encode(object)) ?? Data("{}".utf8)
    return HTTPResponse(
      status: status, contentType: "application/json", body: String(decoding: data, as: UTF8.self) + "\n")
  }
}

/// One request: its head, its body (at most the server's limit) and where it came from.
public struct HTTPRequest: Sendable {
  public var head: HTTPRequestHead
  public var body: ByteBuffer
  public var remote: SocketAddress?

  public init(head: HTTPRequestHead, body: ByteBuffer = ByteBuffer(), remote: SocketAddress? = nil) {
    self.head = head
    self.body = body
    self.remote = remote
  }
}

/// Closes a connection that sent nothing for the idle timeout (a request left unfinished, or an idle keep-alive).
final class IdleConnectionCloser: ChannelInboundHandler, Sendable {
  typealias InboundIn = NIOAny

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
      context.close(promise: nil)
    } else {
      context.fireUserInboundEventTriggered(event)
    }
  }
}

/// The HTTP listener beside the AMQP one (health, the running topology; metrics come here too). Each request is
/// answered by `handler` with its method, path and query.
public final class HTTPServer: Sendable {
  /// The bound address (with the real port when 0 was asked for).
  public let localAddress: SocketAddress
  private let channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
  private let serving: Task<Void, Never>

  private init(
    localAddress: SocketAddress,
    channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>,
    serving: Task<Void, Never>
  ) {
    self.localAddress = localAddress
    self.channel = channel
    self.serving = serving
  }

  /// Binds and serves until ``shutdown()``; a request body over `maxBodySize` bytes is answered with 413 and the
  /// connection closed (the rest of it is never held). `prepare` puts handlers first on each connection (TLS).
  public static func start(
    host: String, port: Int, group: any EventLoopGroup, logger: Logger, idleTimeout: TimeAmount = .seconds(30),
    label: String = "HTTP", maxBodySize: Int = 0, prepare: (@Sendable (any Channel) throws -> Void)? = nil,
    handler: @escaping @Sendable (HTTPRequest) async -> HTTPResponse
  ) async throws -> HTTPServer {
    let channel = try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .bind(host: host, port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          // The idle timer comes first: a TLS handshake that stalls is closed like an idle request.
          try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idleTimeout))
          try prepare?(channel)
          try channel.pipeline.syncOperations.addHandler(IdleConnectionCloser())
          try channel.pipeline.syncOperations.configureHTTPServerPipeline()
          return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
            wrappingChannelSynchronously: channel)
        }
      }
    guard let address = channel.channel.localAddress else { throw ChannelError.unknownLocalAddress }
    logger.info("\(label) listener on \(address)")
    let serving = Task {
      await withDiscardingTaskGroup { group in
        do {
          try await channel.executeThenClose { connections in
            for try await connection in connections {
              group.addTask { await Self.serve(connection, maxBodySize: maxBodySize, handler: handler) }
            }
          }
        } catch {
          logger.debug("HTTP listener closed: \(error)")
        }
      }
    }
    return HTTPServer(localAddress: address, channel: channel, serving: serving)
  }

  /// Binds and serves GET-style requests (the head and where it came from) until ``shutdown()``.
  public static func start(
    host: String, port: Int, group: any EventLoopGroup, logger: Logger, idleTimeout: TimeAmount = .seconds(30),
    prepare: (@Sendable (any Channel) throws -> Void)? = nil,
    handler: @escaping @Sendable (HTTPRequestHead, SocketAddress?) async -> HTTPResponse
  ) async throws -> HTTPServer {
    try await self.start(
      host: host, port: port, group: group, logger: logger, idleTimeout: idleTimeout, prepare: prepare
    ) {
      await handler($0.head, $0.remote)
    }
  }

  private static func serve(
    _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, maxBodySize: Int,
    handler: @escaping @Sendable (HTTPRequest) async -> HTTPResponse
  ) async {
    // A request's errors end its connection only: the listener and every other connection go on.
    try? await connection.executeThenClose { inbound, _ in
      var head: HTTPRequestHead?
      var body = ByteBuffer()
      for try await part in inbound {
        switch part {
        case .head(let requestHead):
          head = requestHead
          body.clear()
        case .body(var chunk):
          if body.readableBytes + chunk.readableBytes > maxBodySize, let request = head {
            // Refused at once: the rest of the body is never read into memory.
            let refusal = HTTPResponse.json(
              ["error": "bad_request", "reason": "request body larger than \(maxBodySize) bytes"],
              status: .payloadTooLarge)
            try await self.write(refusal, to: connection.channel, version: request.version, keepAlive: false)
            return
          }
          body.writeBuffer(&chunk)
        case .end:
          guard let request = head else { continue }
          let response = await handler(
            HTTPRequest(head: request, body: body, remote: connection.channel.remoteAddress))
          try await self.write(
            response, to: connection.channel, version: request.version, keepAlive: request.isKeepAlive)
          if !request.isKeepAlive { return }
          head = nil
          body = ByteBuffer()
        }
      }
    }
  }

  /// Writes a response straight to the channel, awaited until flushed: closing after a large body must not cut it.
  private static func write(
    _ response: HTTPResponse, to channel: any Channel, version: HTTPVersion, keepAlive: Bool
  ) async throws {
    var headers = HTTPHeaders()
    headers.add(name: "Content-Type", value: response.contentType)
    for (name, value) in response.headers { headers.add(name: name, value: value) }
    headers.add(name: "Content-Length", value: "\(response.bytes.readableBytes)")
    if !keepAlive { headers.add(name: "Connection", value: "close") }
    channel.write(
      HTTPServerResponsePart.head(HTTPResponseHead(version: version, status: response.status, headers: headers)),
      promise: nil)
    if response.bytes.readableBytes > 0 {
      channel.write(HTTPServerResponsePart.body(.byteBuffer(response.bytes)), promise: nil)
    }
    try await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
  }

  /// Stops accepting.
  public func shutdown() async {
    try? await self.channel.channel.close()
    await self.serving.value
  }
}
