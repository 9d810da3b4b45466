import AMQPProtocol
import WarrenCore

/// One client connection as the management API shows it (RabbitMQ's `/api/connections` fields).
public struct ConnectionDetails: Sendable {
  /// RabbitMQ's connection name: "peer -> listener".
  public var name: String
  public var vhost: String
  public var user: String
  public var peerHost: String
  public var peerPort: Int
  public var port: Int
  /// `starting`, `tuning`, `opening`, `running`, `blocked` or `closing`.
  public var state: String
  public var channels: Int
  public var channelMax: Int
  public var frameMax: Int
  public var heartbeat: Int
  public var authMechanism: String
  public var clientProperties: FieldTable
  /// Milliseconds since 1970.
  public var connectedAt: UInt64
  public var bytesReceived: Int
  public var bytesSent: Int
  public var pendingBytes: Int
  /// The TLS version (`tlsv1.3`) when it came through the TLS listener.
  public var tlsProtocol: String?
}

/// One channel as the management API shows it (RabbitMQ's `/api/channels` fields).
public struct ChannelDetails: Sendable {
  public var connectionName: String
  public var peerHost: String
  public var peerPort: Int
  public var number: Int
  public var vhost: String
  public var user: String
  public var confirm: Bool
  public var transactional: Bool
  public var prefetchCount: Int
  public var globalPrefetchCount: Int
  public var unacknowledged: Int
  public var unconfirmed: Int
  public var consumerCount: Int
  public var flowActive: Bool
  public var closing: Bool

  /// RabbitMQ's channel name: "connection name (number)".
  public var name: String { "\(self.connectionName) (\(self.number))" }
}

/// One consumer as the management API shows it (RabbitMQ's `/api/consumers` fields).
public struct ConsumerDetails: Sendable {
  public var tag: String
  public var queue: String
  public var vhost: String
  public var ackRequired: Bool
  public var exclusive: Bool
  public var prefetchCount: Int
  public var arguments: FieldTable
  public var channel: ChannelDetails
}

extension BrokerInspection {
  /// Every client connection.
  public func connectionDetails() -> [ConnectionDetails] {
    self.runtime.connections.values.map { $0.details }
  }

  /// Every channel of every open connection.
  public func channelDetails() -> [ChannelDetails] {
    self.runtime.connections.values.flatMap { connection in
      connection.channels.values.map { $0.details }
    }
  }

  /// Every consumer, with its channel.
  public func consumerDetails() -> [ConsumerDetails] {
    self.runtime.connections.values.flatMap { connection in
      connection.channels.values.flatMap { channel -> [ConsumerDetails] in
        let details = channel.details
        return channel.machine.consumers.values.map { consumer in
          ConsumerDetails(
            tag: consumer.tag, queue: consumer.queue.name, vhost: consumer.queue.vhost, ackRequired: !consumer.noAck,
            exclusive: consumer.exclusive, prefetchCount: consumer.prefetchCount, arguments: consumer.arguments,
            channel: details)
        }
      }
    }
  }

  /// Ends a change made through the inspection as a read batch ends: the store commits what was enqueued (and
  /// syncs it), deliveries are flushed.
  public func commit() {
    self.runtime.flushDirty()
  }

  /// Closes the named connection with 320 CONNECTION_FORCED and `reason`; false when there is none.
  public func closeConnection(named name: String, reason: String) -> Bool {
    guard let connection = self.runtime.connections.values.first(where: { $0.name == name }) else { return false }
    connection.forceClose(reason: reason)
    self.runtime.flushDirty()
    return true
  }

  /// Deletes a virtual host as RabbitMQ does: its connections closed with 320, its queues (and their messages),
  /// exchanges, bindings, policies and permissions gone. False when there is no such vhost.
  public func deleteVirtualHost(_ name: String) -> Bool {
    guard self.broker.vhosts[name] != nil else { return false }
    for connection in self.runtime.connections.values where connection.vhost?.name == name {
      connection.forceClose(reason: "CONNECTION_FORCED - vhost '\(name)' is deleted")
    }
    self.broker.removeVirtualHost(name)
    self.runtime.flushDirty()
    return true
  }
}

extension AMQPConnectionHandler {
  var details: ConnectionDetails {
    let state: String
    if self.machine.isOpen {
      state = self.readGate.isBlockedByAlarm ? "blocked" : "running"
    } else if self.machine.username == nil {
      state = "starting"
    } else {
      state = "opening"
    }
    return ConnectionDetails(
      name: self.name, vhost: self.vhost?.name ?? self.machine.virtualHost ?? "", user: self.machine.username ?? "",
      peerHost: self.peerHost, peerPort: self.peerPort, port: self.localPort, state: state,
      channels: self.channels.count, channelMax: Int(self.machine.tuning.channelMax),
      frameMax: Int(self.machine.tuning.frameMax), heartbeat: Int(self.machine.tuning.heartbeat),
      authMechanism: self.machine.mechanism, clientProperties: self.machine.clientProperties,
      connectedAt: self.connectedAt, bytesReceived: self.bytesReceived, bytesSent: self.bytesSent,
      pendingBytes: self.outbound.pendingBytes, tlsProtocol: self.tlsProtocol)
  }
}

extension ServerChannel {
  var details: ChannelDetails {
    ChannelDetails(
      connectionName: self.connection.name, peerHost: self.connection.peerHost, peerPort: self.connection.peerPort,
      number: Int(self.number), vhost: self.vhost.name, user: self.connection.machine.username ?? "",
      confirm: self.machine.mode == .confirm, transactional: self.machine.mode == .transactional,
      prefetchCount: self.machine.consumerPrefetch, globalPrefetchCount: self.machine.channelPrefetch,
      unacknowledged: self.machine.unacked.count, unconfirmed: self.machine.confirms.unconfirmed,
      consumerCount: self.machine.consumers.count, flowActive: self.machine.flowActive,
      closing: self.machine.isClosing)
  }
}
