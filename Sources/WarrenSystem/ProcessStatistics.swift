import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Figures about the process and the machine, read from the operating system.
public struct ProcessStatistics: Sendable {
  /// Resident memory in bytes.
  public var residentMemory: Int
  /// Open file descriptors.
  public var openFileDescriptors: Int
  /// The open file descriptor limit.
  public var maxFileDescriptors: Int
  /// Free disk space where the data directory is, in bytes (available to unprivileged users).
  public var diskFree: Int

  public init(residentMemory: Int, openFileDescriptors: Int, maxFileDescriptors: Int, diskFree: Int) {
    self.residentMemory = residentMemory
    self.openFileDescriptors = openFileDescriptors
    self.maxFileDescriptors = maxFileDescriptors
    self.diskFree = diskFree
  }

  /// Reads the figures now; `dataDirectory` is where disk space is measured.
  public static func read(dataDirectory: String) -> ProcessStatistics {
    ProcessStatistics(
      residentMemory: Self.residentMemory(), openFileDescriptors: Self.openFileDescriptors(),
      maxFileDescriptors: Self.maxFileDescriptors(), diskFree: Self.diskFree(path: dataDirectory))
  }

  /// Resident memory this far above what the broker holds is worth returning to the system.
  public static let trimThreshold = 64 << 20

  /// Returns freed heap memory to the system (glibc's `malloc_trim`) on a background thread: after a flood is
  /// consumed or purged the allocator keeps the pages, and resident memory would stay high.
  public static func returnFreeMemoryInBackground() {
    #if canImport(Glibc)
      // glibc's malloc_trim is not in Swift's Glibc module: looked up once by name (absent on other C libraries).
      guard let trim = Self.mallocTrim else { return }
      Thread.detachNewThread { _ = trim(0) }
    #endif
  }

  #if canImport(Glibc)
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
      guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
      return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
    }()
  #endif

  /// CPU time (user and system) a process has used, in seconds, from `/proc/PID/stat`; nil when it cannot be read.
  /// Its resolution is the kernel's clock tick (10 ms): measure over seconds.
  public static func cpuSeconds(pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let end = stat.lastIndex(of: ")")  // the command name, in parentheses, may hold spaces
    else { return nil }
    let fields = stat[stat.index(after: end)...].split(separator: " ")
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
  }

  /// CPU time (user and system) this process has used, in seconds (`getrusage`, microsecond resolution).
  public static func ownCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
  }

  /// The resident set size from /proc/self/statm (0 where there is none).
  public static func residentMemory() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = statm.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
  }

  static func openFileDescriptors() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
  }

  static func maxFileDescriptors() -> Int {
    var limit = rlimit()
    guard getrlimit(openFileResource, &limit) == 0 else { return 0 }
    return Int(clamping: limit.rlim_cur)
  }

  /// Raises the soft limit of open files to the hard limit: every connection is a file descriptor.
  public static func raiseOpenFileLimit() {
    var limit = rlimit()
    guard getrlimit(openFileResource, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(openFileResource, &limit)
  }

  #if canImport(Glibc)
    private static let openFileResource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
  #else
    private static let openFileResource = RLIMIT_NOFILE
  #endif

  /// Free space for unprivileged users on the file system holding `path` (or its nearest existing parent).
  public static func diskFree(path: String) -> Int {
    var candidate = path.isEmpty ? "." : path
    var stats = statvfs()
    while statvfs(candidate, &stats) != 0 {
      var parent = (candidate as NSString).deletingLastPathComponent
      if parent.isEmpty { parent = "." }
      if parent == candidate { return 0 }
      candidate = parent
    }
    return Int(stats.f_bavail) * Int(stats.f_frsize)
  }

  /// The memory this process may use in bytes: the machine's, or a container's cgroup limit when lower.
  public static func totalMemory() -> Int {
    let physical = Int(ProcessInfo.processInfo.physicalMemory)
    for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
      if let text = try? String(contentsOfFile: path, encoding: .utf8),
        let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), limit > 0, limit < physical
      {
        return limit
      }
    }
    return physical
  }
}
