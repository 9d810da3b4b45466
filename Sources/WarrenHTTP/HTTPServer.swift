import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// A response of the HTTP listener.
public struct HTTPResponse: Sendable {
  public var status: HTTPResponseStatus
  public var contentType: String
  public var body: String
  /// Further headers (`WWW-Authenticate`, ...).
  public var headers: [(String, String)]

  public init(
    status: HTTPResponseStatus = .ok, contentType: String = "text/plain; charset=utf-8", body: String,
    headers: [(String, String)] = []
  ) {
    self.status = status
    self.contentType = contentType
    self.body = body
    self.headers = headers
  }

  /// A JSON body built with an encoder (never by pasting text into quotes).
  public static func json(_ object: [String: String], status: HTTPResponseStatus = .ok) -> HTTPResponse {
    let data = (try? JSONEncoder().encode(object)) ?? Data("{}".utf8)
    return HTTPResponse(
      status: status, contentType: "application/json", body: String(decoding: data, as: UTF8.self) + "\n")
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

  /// Binds and serves until ``shutdown()``.
  public static func start(
    host: String, port: Int, group: any EventLoopGroup, logger: Logger, idleTimeout: TimeAmount = .seconds(30),
    handler: @escaping @Sendable (HTTPRequestHead, SocketAddress?) async -> HTTPResponse
  ) async throws -> HTTPServer {
    let channel = try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .bind(host: host, port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idleTimeout))
          try channel.pipeline.syncOperations.addHandler(IdleConnectionCloser())
          try channel.pipeline.syncOperations.configureHTTPServerPipeline()
          return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
            wrappingChannelSynchronously: channel)
        }
      }
    guard let address = channel.channel.localAddress else { throw ChannelError.unknownLocalAddress }
    logger.info("HTTP listener on \(address)")
    let serving = Task {
      await withDiscardingTaskGroup { group in
        do {
          try await channel.executeThenClose { connections in
            for try await connection in connections {
              group.addTask { await Self.serve(connection, handler: handler) }
            }
          }
        } catch {
          logger.debug("HTTP listener closed: \(error)")
        }
      }
    }
    return HTTPServer(localAddress: address, channel: channel, serving: serving)
  }

  private static func serve(
    _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>,
    handler: @escaping @Sendable (HTTPRequestHead, SocketAddress?) async -> HTTPResponse
  ) async {
    // A request's errors end its connection only: the listener and every other connection go on.
    try? await connection.executeThenClose { inbound, _ in
      var head: HTTPRequestHead?
      for try await part in inbound {
        switch part {
        case .head(let requestHead):
          head = requestHead
        case .body:
          break
        case .end:
          guard let request = head else { continue }
          let response = await handler(request, connection.channel.remoteAddress)
          var headers = HTTPHeaders()
          headers.add(name: "Content-Type", value: response.contentType)
          for (name, value) in response.headers { headers.add(name: name, value: value) }
          headers.add(name: "Content-Length", value: "\(response.body.utf8.count)")
          if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
          // Written straight to the channel and awaited until flushed: closing after a large body must not cut it.
          let channel = connection.channel
          channel.write(
            HTTPServerResponsePart.head(
              HTTPResponseHead(version: request.version, status: response.status, headers: headers)),
            promise: nil)
          channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: response.body))), promise: nil)
          try await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
          if !request.isKeepAlive { return }
        }
      }
    }
  }

  /// Stops accepting.
  public func shutdown() async {
    try? await self.channel.channel.close()
    await self.serving.value
  }
}
