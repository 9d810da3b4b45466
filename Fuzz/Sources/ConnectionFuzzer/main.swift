import ConsistentHashExchange
import DelayedMessageExchange
import HeadersExchange
import Logging
import NIOCore
import NIOEmbedded
import TopicExchange
import WarrenCore
import WarrenServer

/// The exchange types `warren` registers.
let exchangeTypes: ExchangeRegistry = {
  var registry = ExchangeRegistry()
  for type: any ExchangeType in [
    TopicExchangeType(), HeadersExchangeType(), ConsistentHashExchangeType(), DelayedMessageExchangeType(),
  ] {
    registry.register(type)
  }
  return registry
}()

/// A whole broker connection on an EmbeddedChannel, fed the input as client bytes in reads cut where the first
/// byte says: it must never crash, and what it holds must stay bounded by what was sent.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
  let bytes = UnsafeBufferPointer(start: start, count: count)
  guard let cut = bytes.first else { return 0 }
  let channel = EmbeddedChannel()
  let model = Broker(registry: exchangeTypes)
  // Bindings and the queues and exchanges they lead to refer to each other: removed with the vhost, not before.
  defer { for vhost in model.vhosts.values { vhost.removeAll() } }
  let broker = EmbeddedBroker(broker: model, eventLoop: channel.embeddedEventLoop, logger: Logger(label: "fuzz"))
  do {
    try broker.addConnection(to: channel)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5672)).wait()
    var rest = ByteBuffer(bytes: bytes.dropFirst())
    let size = Int(cut) * 16 + 1
    while rest.readableBytes > 0 && channel.isActive {
      try channel.writeInbound(rest.readSlice(length: min(size, rest.readableBytes))!)
      channel.pipeline.fireChannelReadComplete()
      while (try channel.readOutbound(as: ByteBuffer.self)) != nil {}
    }
    channel.embeddedEventLoop.advanceTime(by: .seconds(60))  // every timer fires: handshake, heartbeats, close
    _ = try? channel.finish()
  } catch {
    // Errors close the channel; that is a fine answer.
  }
  // What is still scheduled or pending on the embedded loop runs or is dropped: a real loop would run it (and free
  // the connection) within seconds; the embedded one would keep it, and the channel with it, for ever.
  channel.embeddedEventLoop.advanceTime(by: .seconds(60))
  try? channel.embeddedEventLoop.syncShutdownGracefully()
  return 0
}
