//! Blocking DNS client over real sockets: query builder, UDP/TCP one-shots, a pipelining TCP
//! connection, and [`Reply`], which checks whole answers. Uses hickory-proto as an independent
//! oracle for encoding and parsing. Owns client sockets only; never listens.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::error::{Error, Result};
use crate::rng::random_u16;
use crate::text::rcode_name;

/// Client-side EDNS settings of a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct EdnsSpec {
    udp_size: u16,
    version: u8,
    do_bit: bool,
    z: u16,
    options: Vec<(u16, Vec<u8>)>,
}

impl Default for EdnsSpec {
    fn default() -> Self {
        EdnsSpec {
            udp_size: 1232,
            version: 0,
            do_bit: false,
            z: 0,
            options: Vec::new(),
        }
    }
}

/// A DNS query under construction. Defaults are dig's: random ID, RD=1, class IN, opcode
/// QUERY, no EDNS.
///
/// ```
/// use sextant_testkit::{Query, RecordType};
/// let q = Query::new("example.com.", RecordType::A).id(7).edns(1232).do_bit();
/// let bytes = q.to_bytes();
/// assert_eq!(&bytes[..2], &[0, 7]);
/// ```
#[derive(Debug, Clone)]
pub struct Query {
    name: String,
    rtype: RecordType,
    id: u16,
    rd: bool,
    cd: bool,
    ad: bool,
    opcode: u8,
    class: u16,
    edns: Option<EdnsSpec>,
}

impl Query {
    /// A query for `name` (presentation form; a missing final dot is added) and `rtype`.
    pub fn new(name: &str, rtype: RecordType) -> Self {
        Query {
            name: name.to_string(),
            rtype,
            id: random_u16(),
            rd: true,
            cd: false,
            ad: false,
            opcode: 0,
            class: 1,
            edns: None,
        }
    }

    /// Set the message ID (default random).
    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    /// Set or clear RD (default set).
    pub fn rd(mut self, rd: bool) -> Self {
        self.rd = rd;
        self
    }

    /// Set CD (checking disabled).
    pub fn cd(mut self) -> Self {
        self.cd = true;
        self
    }

    /// Set AD (authentic data) in the query.
    pub fn ad(mut self) -> Self {
        self.ad = true;
        self
    }

    /// Set the opcode (0 = QUERY; 15 for genreport's `opcode` probe).
    pub fn opcode(mut self, opcode: u8) -> Self {
        self.opcode = opcode & 0x0f;
        self
    }

    /// Set the QCLASS (1 = IN, 3 = CH, 4 = HS, 255 = ANY).
    pub fn class(mut self, class: u16) -> Self {
        self.class = class;
        self
    }

    fn edns_mut(&mut self) -> &mut EdnsSpec {
        self.edns.get_or_insert_with(EdnsSpec::default)
    }

    /// Add an OPT record advertising `udp_size`.
    pub fn edns(mut self, udp_size: u16) -> Self {
        self.edns_mut().udp_size = udp_size;
        self
    }

    /// Set the DO bit (adds OPT with size 1232 if none yet).
    pub fn do_bit(mut self) -> Self {
        self.edns_mut().do_bit = true;
        self
    }

    /// Set the EDNS version (adds OPT if none yet).
    pub fn edns_version(mut self, version: u8) -> Self {
        self.edns_mut().version = version;
        self
    }

    /// Set the undefined EDNS flag bits (the 15 bits after DO), e.g. `0x0080`.
    pub fn edns_z(mut self, z: u16) -> Self {
        self.edns_mut().z = z & 0x7fff;
        self
    }

    /// Append an EDNS option with raw `data` (adds OPT if none yet). May be repeated.
    pub fn edns_option(mut self, code: u16, data: &[u8]) -> Self {
        self.edns_mut().options.push((code, data.to_vec()));
        self
    }

    /// The message ID this query will carry.
    pub fn get_id(&self) -> u16 {
        self.id
    }

    /// The hickory message for this query.
    pub fn to_message(&self) -> Result<Message> {
        let mut name =
            Name::from_ascii(&self.name).map_err(|e| Error::Encode(format!("name: {e}")))?;
        name.set_fqdn(true);
        let mut msg = Message::new(self.id, MessageType::Query, OpCode::from_u8(self.opcode));
        msg.metadata.recursion_desired = self.rd;
        msg.metadata.checking_disabled = self.cd;
        msg.metadata.authentic_data = self.ad;
        let mut q = HQuery::query(name, self.rtype);
        q.set_query_class(DNSClass::from(self.class));
        msg.add_query(q);
        if let Some(spec) = &self.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(spec.udp_size);
            edns.set_version(spec.version);
            edns.set_dnssec_ok(spec.do_bit);
            edns.flags_mut().z = spec.z;
            for (code, data) in &spec.options {
                edns.options_mut().options.push((
                    EdnsCode::from(*code),
                    EdnsOption::Unknown(*code, data.clone()),
                ));
            }
            msg.set_edns(edns);
        }
        Ok(msg)
    }

    /// Wire bytes, or an error for an unencodable name.
    pub fn try_to_bytes(&self) -> Result<Vec<u8>> {
        let msg = self.to_message()?;
        let mut bytes = msg.to_vec().map_err(|e| Error::Encode(e.to_string()))?;
        // hickory drops max_payload < 512 and never writes the 15 "z" bits: patch the OPT we wrote.
        if let Some(spec) = &self.edns {
            if let Some(off) = find_opt(&bytes).map(|o| o.offset) {
                let size = spec.udp_size.to_be_bytes();
                let flags = ((u16::from(spec.do_bit) << 15) | spec.z).to_be_bytes();
                if let Some(s) = bytes.get_mut(off + 3..off + 5) {
                    s.copy_from_slice(&size);
                }
                if let Some(s) = bytes.get_mut(off + 6..off + 7) {
                    s[0] = spec.version;
                }
                if let Some(s) = bytes.get_mut(off + 7..off + 9) {
                    s.copy_from_slice(&flags);
                }
            }
        }
        Ok(bytes)
    }

    /// Wire bytes.
    ///
    /// # Panics
    /// If the name cannot be encoded (e.g. a label over 63 bytes); use
    /// [`Query::try_to_bytes`] or hand-made bytes for such probes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.try_to_bytes() {
            Ok(b) => b,
            Err(e) => panic!("sextant-testkit: cannot encode query {self:?}: {e}"),
        }
    }
}

/// Anything that can be sent as a DNS query: a [`Query`] or raw bytes.
pub trait AsWire {
    /// The bytes to put on the wire (without TCP length prefix).
    fn wire(&self) -> Result<Vec<u8>>;
}

impl AsWire for Query {
    fn wire(&self) -> Result<Vec<u8>> {
        self.try_to_bytes()
    }
}

impl AsWire for [u8] {
    fn wire(&self) -> Result<Vec<u8>> {
        Ok(self.to_vec())
    }
}

impl AsWire for Vec<u8> {
    fn wire(&self) -> Result<Vec<u8>> {
        Ok(self.clone())
    }
}

impl<const N: usize> AsWire for [u8; N] {
    fn wire(&self) -> Result<Vec<u8>> {
        Ok(self.to_vec())
    }
}

impl AsWire for Message {
    fn wire(&self) -> Result<Vec<u8>> {
        self.to_vec().map_err(|e| Error::Encode(e.to_string()))
    }
}

/// EDNS data of a reply, read straight from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdnsInfo {
    /// Advertised UDP payload size (the OPT CLASS field).
    pub udp_size: u16,
    /// EDNS version.
    pub version: u8,
    /// The DO bit.
    pub do_bit: bool,
    /// The other 15 flag bits (must be zero from a compliant server).
    pub z: u16,
    /// Upper 8 bits of the extended rcode.
    pub ext_rcode: u8,
    /// Options in wire order: `(code, data)`.
    pub options: Vec<(u16, Vec<u8>)>,
    /// How many OPT records the message carried (a compliant message has exactly one).
    pub opt_count: usize,
    /// Owner name of the OPT record was the root.
    pub owner_is_root: bool,
}

/// A parsed DNS reply: the raw bytes plus hickory's [`Message`].
#[derive(Debug, Clone)]
pub struct Reply {
    bytes: Vec<u8>,
    msg: Message,
}

impl Reply {
    /// Parse `bytes` as a DNS message.
    pub fn parse(bytes: Vec<u8>) -> Result<Reply> {
        match Message::from_vec(&bytes) {
            Ok(msg) => Ok(Reply { bytes, msg }),
            Err(e) => Err(Error::Decode {
                len: bytes.len(),
                reason: e.to_string(),
            }),
        }
    }

    /// The raw wire bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size on the wire.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true for a parsed message (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The parsed hickory message.
    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// Message ID.
    pub fn id(&self) -> u16 {
        self.msg.metadata.id
    }

    /// Opcode number from the header.
    pub fn opcode(&self) -> u8 {
        self.bytes.get(2).map(|b| (b >> 3) & 0x0f).unwrap_or(0)
    }

    /// Full rcode including the EDNS extended bits (e.g. BADVERS = 16).
    pub fn rcode(&self) -> ResponseCode {
        self.msg.metadata.response_code
    }

    /// Numeric full rcode (header low 4 bits + OPT high 8 bits).
    pub fn rcode_value(&self) -> u16 {
        let low = u16::from(self.bytes.get(3).copied().unwrap_or(0) & 0x0f);
        let high = self.edns().map(|e| u16::from(e.ext_rcode)).unwrap_or(0);
        (high << 4) | low
    }

    /// CoreDNS-style rcode name: `"NOERROR"`, `"NXDOMAIN"`, `"BADVERS"`...
    pub fn rcode_name(&self) -> String {
        rcode_name(self.rcode_value())
    }

    /// Header flags as CoreDNS logs them: set flags joined by `,` in the order
    /// `qr,aa,tc,rd,ra,z,ad,cd` (e.g. `"qr,aa,rd"`; empty string if none).
    pub fn flags(&self) -> String {
        let b2 = self.bytes.get(2).copied().unwrap_or(0);
        let b3 = self.bytes.get(3).copied().unwrap_or(0);
        let all = [
            ("qr", b2 & 0x80 != 0),
            ("aa", b2 & 0x04 != 0),
            ("tc", b2 & 0x02 != 0),
            ("rd", b2 & 0x01 != 0),
            ("ra", b3 & 0x80 != 0),
            ("z", b3 & 0x40 != 0),
            ("ad", b3 & 0x20 != 0),
            ("cd", b3 & 0x10 != 0),
        ];
        all.iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True if `flag` (one of `qr aa tc rd ra z ad cd`) is set.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags().split(',').any(|f| f == flag)
    }

    /// True if TC is set.
    pub fn truncated(&self) -> bool {
        self.has_flag("tc")
    }

    /// The question as `name class type` (e.g. `"example.com. IN A"`), if any.
    pub fn question(&self) -> Option<String> {
        self.msg
            .queries
            .first()
            .map(|q| format!("{} {} {}", q.name(), q.query_class(), q.query_type()))
    }

    /// Answer section, each record as `name ttl class type rdata`.
    pub fn answers(&self) -> Vec<String> {
        self.msg.answers.iter().map(|r| r.to_string()).collect()
    }

    /// Authority section, each record as `name ttl class type rdata`.
    pub fn authority(&self) -> Vec<String> {
        self.msg.authorities.iter().map(|r| r.to_string()).collect()
    }

    /// Additional section without the OPT record, each as `name ttl class type rdata`.
    pub fn additional(&self) -> Vec<String> {
        self.msg.additionals.iter().map(|r| r.to_string()).collect()
    }

    /// The answer section sorted (for comparing answers whose order is not defined).
    pub fn answers_sorted(&self) -> Vec<String> {
        let mut v = self.answers();
        v.sort();
        v
    }

    /// EDNS data, if the reply carried an OPT record.
    pub fn edns(&self) -> Option<EdnsInfo> {
        find_opt(&self.bytes).map(|o| o.info)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            ";; id {} {} flags: {} ({} bytes)",
            self.id(),
            self.rcode_name(),
            self.flags(),
            self.len()
        )?;
        if let Some(q) = self.question() {
            writeln!(f, ";; QUESTION: {q}")?;
        }
        if let Some(e) = self.edns() {
            writeln!(
                f,
                ";; OPT: version {} udp {} do {} options {:?}",
                e.version, e.udp_size, e.do_bit, e.options
            )?;
        }
        for (title, recs) in [
            ("ANSWER", self.answers()),
            ("AUTHORITY", self.authority()),
            ("ADDITIONAL", self.additional()),
        ] {
            writeln!(f, ";; {title}:")?;
            for r in recs {
                writeln!(f, "{r}")?;
            }
        }
        Ok(())
    }
}

struct OptFound {
    /// Offset of the OPT record's owner name.
    offset: usize,
    info: EdnsInfo,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Skip a (possibly compressed) name starting at `at`; returns the offset after it and whether
/// it was the root name.
fn skip_name(b: &[u8], mut at: usize) -> Option<(usize, bool)> {
    let start = at;
    for _ in 0..128 {
        let len = *b.get(at)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some((at + 1, at == start)),
            0x00 => at += 1 + usize::from(len),
            0xc0 => {
                b.get(at + 1)?;
                return Some((at + 2, false));
            }
            _ => return None,
        }
    }
    None
}

/// Walk a message and collect its OPT record(s) from the additional section.
fn find_opt(b: &[u8]) -> Option<OptFound> {
    let qd = be16(b, 4)?;
    let an = be16(b, 6)?;
    let ns = be16(b, 8)?;
    let ar = be16(b, 10)?;
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(b, at)?.0 + 4;
    }
    for _ in 0..(u32::from(an) + u32::from(ns)) {
        at = skip_name(b, at)?.0;
        let rdlen = usize::from(be16(b, at + 8)?);
        at += 10 + rdlen;
    }
    let mut found: Option<OptFound> = None;
    let mut count = 0;
    for _ in 0..ar {
        let owner = at;
        let (after, root) = skip_name(b, at)?;
        at = after;
        let rtype = be16(b, at)?;
        let class = be16(b, at + 2)?;
        let ext = *b.get(at + 4)?;
        let version = *b.get(at + 5)?;
        let flags = be16(b, at + 6)?;
        let rdlen = usize::from(be16(b, at + 8)?);
        let rdata = b.get(at + 10..at + 10 + rdlen)?;
        at += 10 + rdlen;
        if rtype != 41 {
            continue;
        }
        count += 1;
        if found.is_some() {
            continue;
        }
        let mut options = Vec::new();
        let mut p = 0;
        while p + 4 <= rdata.len() {
            let code = be16(rdata, p)?;
            let len = usize::from(be16(rdata, p + 2)?);
            let data = rdata.get(p + 4..p + 4 + len)?;
            options.push((code, data.to_vec()));
            p += 4 + len;
        }
        found = Some(OptFound {
            offset: owner,
            info: EdnsInfo {
                udp_size: class,
                version,
                do_bit: flags & 0x8000 != 0,
                z: flags & 0x7fff,
                ext_rcode: ext,
                options,
                opt_count: 0,
                owner_is_root: root,
            },
        });
    }
    found.map(|mut f| {
        f.info.opt_count = count;
        f
    })
}

fn client_socket_for(addr: SocketAddr) -> Result<UdpSocket> {
    let sock = if addr.is_ipv4() {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?
    } else {
        UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?
    };
    Ok(sock)
}

/// Send `query` over UDP from a fresh socket and return the first datagram that comes back,
/// or `None` if nothing arrives within `timeout` (for "must be dropped" assertions).
pub fn udp_raw<Q: AsWire + ?Sized>(
    addr: SocketAddr,
    query: &Q,
    timeout: Duration,
) -> Result<Option<Vec<u8>>> {
    let bytes = query.wire()?;
    let sock = client_socket_for(addr)?;
    sock.connect(addr)?;
    sock.send(&bytes)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv(&mut buf) {
            Ok(n) => return Ok(Some(buf[..n].to_vec())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // ICMP port unreachable surfaces as ConnectionRefused on a connected socket.
            Err(e) => return Err(e.into()),
        }
    }
}

/// Send `query` over UDP and parse the reply; [`Error::Timeout`] if none within `timeout`.
pub fn udp<Q: AsWire + ?Sized>(addr: SocketAddr, query: &Q, timeout: Duration) -> Result<Reply> {
    match udp_raw(addr, query, timeout)? {
        Some(b) => Reply::parse(b),
        None => Err(Error::timeout(timeout, format!("UDP reply from {addr}"))),
    }
}

/// Send `query` over UDP from a socket bound to `src` (e.g. `127.0.0.2:0`, to be another client
/// on loopback) and parse the reply; [`Error::Timeout`] if none within `timeout`.
pub fn udp_from<Q: AsWire + ?Sized>(
    src: SocketAddr,
    addr: SocketAddr,
    query: &Q,
    timeout: Duration,
) -> Result<Reply> {
    let sock = UdpSocket::bind(src)?;
    sock.connect(addr)?;
    sock.send(&query.wire()?)?;
    sock.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 65_535];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => return Reply::parse(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Error::timeout(timeout, format!("UDP reply from {addr}")))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Send `query` over a fresh TCP connection (length-prefixed) and return the raw reply, or
/// `None` if the server closed or stayed silent until `timeout`.
pub fn tcp_raw<Q: AsWire + ?Sized>(
    addr: SocketAddr,
    query: &Q,
    timeout: Duration,
) -> Result<Option<Vec<u8>>> {
    let mut conn = TcpConn::connect(addr, timeout)?;
    conn.send(&query.wire()?)?;
    match conn.recv(timeout) {
        Ok(b) => Ok(Some(b)),
        Err(Error::Closed) => Ok(None),
        Err(e) if e.is_timeout() => Ok(None),
        Err(Error::Io(e)) if e.kind() == ErrorKind::ConnectionReset => Ok(None),
        Err(e) => Err(e),
    }
}

/// Send `query` over a fresh TCP connection and parse the reply.
pub fn tcp<Q: AsWire + ?Sized>(addr: SocketAddr, query: &Q, timeout: Duration) -> Result<Reply> {
    let mut conn = TcpConn::connect(addr, timeout)?;
    conn.send(&query.wire()?)?;
    conn.recv_reply(timeout)
}

/// A TCP connection to a DNS server, for pipelining, connection reuse and slow/partial writes.
///
/// ```no_run
/// # use sextant_testkit::*; use std::time::Duration;
/// # let addr: std::net::SocketAddr = "127.0.0.1:53".parse().unwrap();
/// let mut c = TcpConn::connect(addr, Duration::from_secs(2)).unwrap();
/// for i in 0..50u16 {
///     c.send(&Query::new("example.com.", RecordType::A).id(i).to_bytes()).unwrap();
/// }
/// for _ in 0..50 {
///     let r = c.recv_reply(Duration::from_secs(2)).unwrap();
/// }
/// ```
#[derive(Debug)]
pub struct TcpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpConn {
    /// Connect within `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpConn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout.max(Duration::from_millis(100))))?;
        Ok(TcpConn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Local address of this connection.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    /// Send one message with its 2-byte length prefix, in a single write.
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        let len = u16::try_from(msg.len())
            .map_err(|_| Error::Encode(format!("message of {} bytes", msg.len())))?;
        let mut framed = Vec::with_capacity(msg.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(msg);
        self.stream.write_all(&framed)?;
        Ok(())
    }

    /// Send a [`Query`] (or anything [`AsWire`]) length-prefixed.
    pub fn send_query<Q: AsWire + ?Sized>(&mut self, q: &Q) -> Result<()> {
        let b = q.wire()?;
        self.send(&b)
    }

    /// Send bytes exactly as given (no prefix): for split prefixes and partial messages.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    fn fill(&mut self, need: usize, deadline: Instant, timeout: Duration) -> Result<()> {
        let mut chunk = [0u8; 4096];
        while self.buf.len() < need {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::timeout(timeout, "TCP reply"));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Error::timeout(timeout, "TCP reply"))
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Receive one length-prefixed message (without the prefix) within `timeout`.
    /// [`Error::Closed`] if the server closed first.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        self.fill(2, deadline, timeout)?;
        let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
        self.fill(2 + len, deadline, timeout)?;
        let msg = self.buf[2..2 + len].to_vec();
        self.buf.drain(..2 + len);
        Ok(msg)
    }

    /// Receive and parse one reply.
    pub fn recv_reply(&mut self, timeout: Duration) -> Result<Reply> {
        Reply::parse(self.recv(timeout)?)
    }

    /// True if the server closes (FIN or RST) within `timeout`; false if the connection is
    /// still open then, or if the server sent data (which stays buffered for `recv`).
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return true;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return false;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    /// Half-close our side (send FIN).
    pub fn shutdown_write(&self) -> Result<()> {
        self.stream.shutdown(Shutdown::Write)?;
        Ok(())
    }

    /// The underlying stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bytes_carry_every_knob() {
        let q = Query::new("Example.COM", RecordType::A)
            .id(0x1234)
            .rd(false)
            .cd()
            .ad()
            .opcode(15)
            .class(3)
            .edns(400)
            .do_bit()
            .edns_version(1)
            .edns_z(0x0080)
            .edns_option(100, &[1, 2, 3]);
        let b = q.to_bytes();
        assert_eq!(&b[..2], &[0x12, 0x34]);
        assert_eq!((b[2] >> 3) & 0x0f, 15, "opcode");
        assert_eq!(b[2] & 0x01, 0, "rd clear");
        assert_eq!(b[3] & 0x30, 0x30, "ad+cd");
        let opt = find_opt(&b).unwrap().info;
        assert_eq!(opt.udp_size, 400);
        assert_eq!(opt.version, 1);
        assert!(opt.do_bit);
        assert_eq!(opt.z, 0x0080);
        assert_eq!(opt.options, vec![(100, vec![1, 2, 3])]);
        assert_eq!(opt.opt_count, 1);
        assert!(opt.owner_is_root);
        // question: name keeps case, class CH
        assert!(b.windows(7).any(|w| w == b"Example"));
        let qclass_at = 12 + "Example.COM.".len() + 1 + 2;
        assert_eq!(&b[qclass_at..qclass_at + 2], &[0, 3]);
    }

    #[test]
    fn reply_reports_flags_rcode_and_sections() {
        let mut m = Message::new(9, MessageType::Response, OpCode::Query);
        m.metadata.authoritative = true;
        m.metadata.recursion_desired = true;
        m.metadata.response_code = ResponseCode::NXDomain;
        m.add_query(HQuery::query(
            Name::from_ascii("x.example.").unwrap(),
            RecordType::A,
        ));
        m.add_authority(
            crate::parse_record(
                "example. 30 IN SOA ns.example. host.example. 1 7200 1800 86400 30",
            )
            .unwrap(),
        );
        let r = Reply::parse(m.to_vec().unwrap()).unwrap();
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(r.rcode_name(), "NXDOMAIN");
        assert_eq!(r.rcode(), ResponseCode::NXDomain);
        assert!(r.answers().is_empty());
        assert_eq!(
            r.authority(),
            vec!["example. 30 IN SOA ns.example. host.example. 1 7200 1800 86400 30"]
        );
        assert_eq!(r.question().unwrap(), "x.example. IN A");
        assert!(r.edns().is_none());
    }

    #[test]
    fn extended_rcode_badvers_is_seen() {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.response_code = ResponseCode::BADVERS;
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
        let b = m.to_vec().unwrap();
        let r = Reply::parse(b).unwrap();
        assert_eq!(r.rcode_value(), 16);
        assert_eq!(r.rcode_name(), "BADVERS");
        assert_eq!(r.edns().unwrap().ext_rcode, 1);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(
            Reply::parse(vec![1, 2, 3]),
            Err(Error::Decode { len: 3, .. })
        ));
        assert!(find_opt(&[0xff; 40]).is_none());
    }
}
