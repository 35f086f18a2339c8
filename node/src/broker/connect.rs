//! CORE. Connection lifecycle: CONNECT, enhanced authentication, session takeover and
//! resumption, DISCONNECT, wills (with delay) and session expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::auth::{AuthStep, Credentials};
use super::message::{Message, SessionKey};
use super::session::{ConnId, OutState, PendingConnect, Phase, Session};
use super::{Broker, Timer};
use crate::mqtt::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, Protocol, PubResp, Publish, QoS, Will,
};
use crate::mqtt::properties::Properties;
use crate::mqtt::reason;

impl Broker {
    pub(super) fn handle_connect(&mut self, now: Instant, conn: ConnId, mut connect: Connect) {
        let protocol = connect.protocol.unwrap_or(Protocol::V3_1_1);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.protocol = protocol;
        }
        let (count_max, bytes_max) = (self.config.max_user_properties, self.config.max_user_property_bytes);
        if let Some(text) = super::limits::user_properties_excess(
            super::limits::connect_blocks(&connect),
            count_max,
            bytes_max,
        ) {
            return self.refuse(now, conn, reason::PACKET_TOO_LARGE, text);
        }
        if self.shutting_down {
            return self.refuse(now, conn, reason::SERVER_UNAVAILABLE, "server shutting down");
        }
        if self.isolated() {
            return self.refuse(now, conn, reason::SERVER_UNAVAILABLE, "node isolated from the cluster");
        }
        let connected = self.stats.clients_connected as usize;
        if connected >= self.connection_limit() {
            return self.refuse(now, conn, reason::QUOTA_EXCEEDED, "too many connections");
        }
        let (rate, burst) = (self.config.connect_rate, self.config.connect_burst);
        if !self.connect_bucket.take(now, rate, burst) {
            return self.refuse(now, conn, reason::CONNECTION_RATE_EXCEEDED, "connection rate exceeded");
        }
        if self.banned(now, &connect.client_id, connect.username.as_deref()) {
            return self.refuse(now, conn, reason::BANNED, "banned");
        }
        let mut assigned_id = false;
        if connect.client_id.is_empty() {
            // MQTT-3.1.3-8: 3.x needs clean session for a server-assigned id; 5.0 always
            // gets one (MQTT-3.1.3-6) and learns it from Assigned Client Identifier.
            if !protocol.is_v5() && (!connect.clean_start || protocol == Protocol::V3_1) {
                return self.refuse(now, conn, reason::CLIENT_IDENTIFIER_NOT_VALID, "empty client id");
            }
            connect.client_id = ByteString::from(format!("flotilla-{:x}-{conn:x}", self.id_salt));
            assigned_id = true;
        }
        if let Some(method) = connect.properties.authentication_method.clone() {
            let creds = credentials(&connect);
            let Some(mut exchange) = self.auth.start_exchange(&method, &creds) else {
                return self.refuse(
                    now,
                    conn,
                    reason::BAD_AUTHENTICATION_METHOD,
                    "unsupported authentication method",
                );
            };
            let step = exchange.step(connect.properties.authentication_data.as_deref());
            return match step {
                AuthStep::Continue(data) => {
                    self.send_auth(conn, reason::CONTINUE_AUTHENTICATION, &method, data);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.phase = Phase::Authenticating(Box::new(PendingConnect {
                            connect,
                            exchange,
                            assigned_id,
                        }));
                    }
                }
                AuthStep::Success(data) => self.finish_connect(now, conn, connect, assigned_id, data, None),
                AuthStep::Fail(code) => self.refuse(now, conn, code, "authentication failed"),
            };
        }
        if let Err(code) = self.auth.authenticate(&credentials(&connect)) {
            return self.refuse(now, conn, code, "not authorized");
        }
        self.finish_connect(now, conn, connect, assigned_id, None, None);
    }

    fn send_auth(&mut self, conn: ConnId, code: u8, method: &str, data: Bytes) {
        let properties = Properties {
            authentication_method: Some(method.into()),
            authentication_data: Some(data),
            ..Properties::default()
        };
        self.send(conn, Packet::Auth(Auth { reason_code: code, properties }));
    }

    /// AUTH during CONNECT (enhanced authentication, section 4.12).
    pub(super) fn handle_connect_auth(&mut self, now: Instant, conn: ConnId, auth: Auth) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Phase::Authenticating(pending) = std::mem::replace(&mut c.phase, Phase::AwaitConnect) else {
            return;
        };
        let mut pending = *pending;
        let method = pending.connect.properties.authentication_method.clone().unwrap_or_default();
        if auth.reason_code != reason::CONTINUE_AUTHENTICATION
            || auth.properties.authentication_method.as_deref() != Some(&*method)
        {
            c.phase = Phase::Authenticating(Box::new(pending));
            return self.protocol_error(now, conn, reason::PROTOCOL_ERROR, "bad AUTH during CONNECT");
        }
        match pending.exchange.step(auth.properties.authentication_data.as_deref()) {
            AuthStep::Continue(data) => {
                self.send_auth(conn, reason::CONTINUE_AUTHENTICATION, &method, data);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::Authenticating(Box::new(pending));
                }
            }
            AuthStep::Success(data) => {
                self.finish_connect(now, conn, pending.connect, pending.assigned_id, data, None)
            }
            AuthStep::Fail(code) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::Authenticating(Box::new(pending));
                }
                self.refuse(now, conn, code, "authentication failed")
            }
        }
    }

    /// Re-authentication after CONNACK (AUTH 0x19, MQTT-4.12.1).
    pub(super) fn handle_reauth(&mut self, now: Instant, conn: ConnId, auth: Auth) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let method = c.extras.as_ref().and_then(|x| x.auth_method.clone());
        let same_method = method.is_some() && auth.properties.authentication_method == method;
        if !same_method {
            return self.protocol_error(
                now,
                conn,
                reason::PROTOCOL_ERROR,
                "AUTH without the connection's method",
            );
        }
        let method = method.unwrap_or_default();
        let step = match (auth.reason_code, c.extras.as_mut().and_then(|x| x.reauth.as_mut())) {
            (reason::RE_AUTHENTICATE, _) => {
                let creds = Credentials { client_id: "", username: c.username.as_deref(), password: None };
                match self.auth.start_exchange(&method, &creds) {
                    Some(mut ex) => {
                        let step = ex.step(auth.properties.authentication_data.as_deref());
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.extras().reauth = Some(ex);
                        }
                        step
                    }
                    None => AuthStep::Fail(reason::BAD_AUTHENTICATION_METHOD),
                }
            }
            (reason::CONTINUE_AUTHENTICATION, Some(ex)) => {
                ex.step(auth.properties.authentication_data.as_deref())
            }
            _ => return self.protocol_error(now, conn, reason::PROTOCOL_ERROR, "unexpected AUTH"),
        };
        match step {
            AuthStep::Continue(data) => self.send_auth(conn, reason::CONTINUE_AUTHENTICATION, &method, data),
            AuthStep::Success(data) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.extras().reauth = None;
                }
                let properties = Properties {
                    authentication_method: Some(method),
                    authentication_data: data,
                    ..Properties::default()
                };
                self.send(conn, Packet::Auth(Auth { reason_code: reason::SUCCESS, properties }));
            }
            AuthStep::Fail(code) => self.protocol_error(now, conn, code, "re-authentication failed"),
        }
    }

    /// Refuses a CONNECT with CONNACK `code` (mapped for 3.x) and closes.
    pub(super) fn refuse(&mut self, now: Instant, conn: ConnId, code: u8, text: &str) {
        let address = self.conns.get(&conn).and_then(|c| c.peer);
        tracing::info!(
            conn,
            address = address.map(tracing::field::display),
            reason_code = code,
            text,
            "CONNECT refused"
        );
        *self.refusals.entry(code).or_default() += 1;
        let properties = self.reason_props(conn, text);
        self.send_closing(
            conn,
            Packet::ConnAck(ConnAck { session_present: false, reason_code: code, properties }),
        );
        self.close_now(now, conn, None);
    }

    /// Attaches the session of an accepted CONNECT and sends CONNACK. In a cluster the
    /// session record is fenced first: the first call emits the `Acquire` and returns; the
    /// second comes with what it `acquired`.
    pub(super) fn finish_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        connect: Connect,
        assigned_id: bool,
        auth_data: Option<Bytes>,
        acquired: Option<Box<super::Acquired>>,
    ) {
        let protocol = connect.protocol.unwrap_or(Protocol::V3_1_1);
        let v5 = protocol.is_v5();
        let p = &connect.properties;
        let expiry_secs = if v5 {
            p.session_expiry_interval.unwrap_or(0).min(self.config.max_session_expiry_secs)
        } else if connect.clean_start {
            0
        } else {
            self.config.default_session_expiry_secs.min(self.config.max_session_expiry_secs)
        };
        if let Some(w) = &connect.will {
            if crate::mqtt::topic::validate_topic_name(&w.topic, self.config.topic_limits()).is_err() {
                return self.refuse(now, conn, reason::TOPIC_NAME_INVALID, "invalid will topic");
            }
            // MQTT-3.2.2-12, -13: a v5 will beyond what the server supports is refused.
            if v5 && w.qos as u8 > self.config.max_qos {
                return self.refuse(now, conn, reason::QOS_NOT_SUPPORTED, "will QoS not supported");
            }
            if v5 && w.retain && !self.config.retain_available {
                return self.refuse(now, conn, reason::RETAIN_NOT_SUPPORTED, "retain not supported");
            }
        }
        // Stored for the session's life: copy out of the read buffer (see `own`).
        let client_id = own(&connect.client_id);
        if !self.by_client.contains_key(&client_id) && self.sessions.len() >= self.config.max_sessions {
            return self.refuse(now, conn, reason::QUOTA_EXCEEDED, "too many sessions (max-sessions)");
        }
        if acquired.is_none() && self.cluster_enabled() {
            return self.acquire(conn, connect, assigned_id, auth_data, expiry_secs);
        }
        let adopted =
            acquired.as_ref().and_then(|a| self.adopt_session(now, &client_id, connect.clean_start, a));
        // Takeover: the old connection gets DISCONNECT 0x8E and is closed (MQTT-3.1.4-3).
        if let Some(&key) = self.by_client.get(&client_id)
            && let Some(old) = self.sessions.get(&key).and_then(|s| s.conn)
            && !super::test_bugs::two_sessions()
        {
            self.send_disconnect(old, reason::SESSION_TAKEN_OVER, "session taken over");
            self.close_now(now, old, Some(true));
        }
        let existing = self.by_client.get(&client_id).copied();
        let (key, present) = match existing {
            Some(key) if adopted == Some(key) => (key, true),
            Some(key) if !connect.clean_start => (key, true),
            Some(key) => {
                self.end_session(now, key);
                (self.create_session(client_id.clone(), expiry_secs), false)
            }
            None => (self.create_session(client_id.clone(), expiry_secs), false),
        };
        let mut keep_alive = connect.keep_alive_secs;
        let max_ka = self.config.max_keep_alive_secs;
        let default_ka = self.config.default_keep_alive_secs;
        let server_keep_alive = if v5 && max_ka > 0 && (keep_alive == 0 || keep_alive > max_ka) {
            keep_alive = if keep_alive == 0 && default_ka > 0 { default_ka.min(max_ka) } else { max_ka };
            Some(keep_alive)
        } else if v5 && keep_alive == 0 && default_ka > 0 {
            keep_alive = default_ka;
            Some(default_ka)
        } else {
            None
        };
        let mut will = connect.will;
        if let Some(w) = &mut will {
            w.qos = w.qos.min(self.max_qos());
            w.topic = own(&w.topic);
            w.payload = Bytes::copy_from_slice(&w.payload);
            w.properties = w.properties.detached();
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.phase = Phase::Connected;
        c.protocol = protocol;
        c.session = Some(key);
        c.keep_alive_secs = keep_alive;
        c.client_receive_max = p.receive_maximum.unwrap_or(u16::MAX);
        c.client_max_packet_size = p.maximum_packet_size.unwrap_or(u32::MAX);
        c.client_alias_max = p.topic_alias_maximum.unwrap_or(0).min(self.config.topic_alias_out_max);
        c.problem_info = p.request_problem_information.unwrap_or(1) == 1;
        c.will = will.map(Box::new);
        c.username = connect.username.as_deref().map(Arc::from);
        if let Some(method) = p.authentication_method.as_deref() {
            c.extras().auth_method = Some(ByteString::from(method));
        }
        let wants_response_info = p.request_response_information == Some(1);
        self.cancel_session_timers(key);
        if let Some(a) = &acquired {
            self.set_cluster_epoch(key, a);
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.conn = Some(conn);
        session.generation += 1;
        session.expiry_secs = expiry_secs;
        let had_pending_will = session.will_pending.take().is_some();
        self.stats.clients_connected += 1;
        self.stats.connects_accepted += 1;
        self.journal_session(key);
        let will = self.conns.get(&conn).and_then(|c| c.will.as_deref().cloned());
        if will.is_some() || had_pending_will {
            self.journal_will(&client_id, will.as_ref());
        }
        self.stats.clients_maximum = self.stats.clients_maximum.max(self.stats.clients_connected);

        let mut props = Properties::default();
        if v5 {
            let asked = connect.properties.session_expiry_interval.unwrap_or(0);
            if asked != expiry_secs {
                props.session_expiry_interval = Some(expiry_secs);
            }
            props.receive_maximum = Some(self.config.max_inflight);
            props.maximum_packet_size = Some(self.config.max_packet_size);
            props.topic_alias_maximum = Some(self.config.topic_alias_max);
            if self.config.max_qos < 2 {
                props.maximum_qos = Some(self.config.max_qos);
            }
            if !self.config.retain_available {
                props.retain_available = Some(0);
            }
            if assigned_id {
                props.assigned_client_identifier = Some(client_id.clone());
            }
            props.server_keep_alive = server_keep_alive;
            // A UTF-8 string property holds at most 65,535 bytes (its length is a u16): a
            // client id near that limit plus the prefix would wrap the length and corrupt the
            // CONNACK, so the optional Response Information is left out then.
            let info_len = self.config.response_information_prefix.len() + client_id.len();
            if wants_response_info && info_len <= usize::from(u16::MAX) {
                props.response_information =
                    Some(format!("{}{}", self.config.response_information_prefix, client_id).into());
            }
            if let Some(method) = &connect.properties.authentication_method {
                props.authentication_method = Some(method.clone());
                props.authentication_data = auth_data;
            }
        }
        if let Some(c) = self.conns.get(&conn) {
            let (user, address) = (c.username.as_deref(), c.peer);
            tracing::info!(conn, client_id = %client_id, user, address = address.map(tracing::field::display), present, ?protocol,
                reason_code = reason::SUCCESS, "client connected");
        }
        self.send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present: present,
                reason_code: reason::SUCCESS,
                properties: props,
            }),
        );
        self.resend_inflight(now, conn, key);
        self.arm_keep_alive(now, conn);
        self.wake(conn);
    }

    fn max_qos(&self) -> QoS {
        QoS::from_u8(self.config.max_qos).unwrap_or(QoS::ExactlyOnce)
    }

    pub(super) fn create_session(&mut self, client_id: ByteString, expiry_secs: u32) -> SessionKey {
        let key = self.next_session;
        self.next_session += 1;
        self.by_client.insert(client_id.clone(), key);
        self.sessions.insert(key, Box::new(Session::new(client_id, expiry_secs)));
        key
    }

    /// Retransmits unacknowledged outbound messages on a resumed session (MQTT-4.4.0-1):
    /// PUBLISH with DUP for unacknowledged ones, PUBREL for released QoS 2.
    fn resend_inflight(&mut self, now: Instant, conn: ConnId, key: SessionKey) {
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        let mut packets = Vec::with_capacity(s.inflight.len());
        for f in &s.inflight {
            match f.state {
                OutState::Released => packets.push(Packet::PubRel(PubResp::new(f.packet_id))),
                OutState::Published => {
                    let d = &f.delivery;
                    let mut properties = d.msg.properties.clone();
                    properties.message_expiry_interval = d.msg.remaining_expiry_secs(now);
                    properties.subscription_identifiers.clone_from(&d.sub_ids);
                    let publish = Publish {
                        dup: true,
                        qos: d.qos,
                        retain: d.retain,
                        topic: d.msg.topic.clone(),
                        packet_id: f.packet_id,
                        properties,
                        payload: d.msg.payload.clone(),
                    };
                    packets.push(Packet::Publish(publish));
                }
            }
        }
        for p in packets {
            self.send(conn, p);
        }
    }

    pub(super) fn handle_disconnect(&mut self, now: Instant, conn: ConnId, d: Disconnect) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.close_reason = Some(d.reason_code);
        if let (Some(key), Some(new_expiry)) = (c.session, d.properties.session_expiry_interval) {
            let old = self.sessions.get(&key).map_or(0, |s| s.expiry_secs);
            if old == 0 && new_expiry != 0 {
                // MQTT-3.14.2-2: not a valid DISCONNECT; the will is published.
                return self.protocol_error(
                    now,
                    conn,
                    reason::PROTOCOL_ERROR,
                    "session expiry raised from 0",
                );
            }
            if let Some(s) = self.sessions.get_mut(&key) {
                s.expiry_secs = new_expiry.min(self.config.max_session_expiry_secs);
            }
            if new_expiry > 0 {
                self.journal_session(key);
            }
        }
        // 0x04: disconnect with will; anything else a client sends ends it without the will
        // (MQTT-3.14.4-3), except error codes, which still publish it.
        let publish_will = d.reason_code == reason::DISCONNECT_WITH_WILL || d.reason_code >= 0x80;
        self.close_now(now, conn, Some(publish_will));
    }

    /// Detaches the session of `conn`: handles the will, redelivers shared messages, and
    /// ends the session or starts its expiry clock.
    pub(super) fn detach(&mut self, now: Instant, conn: ConnId, publish_will: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let will = c.will.take();
        let username = c.username.as_ref().map(|u| u.to_string());
        let Some(key) = c.session.take() else {
            return;
        };
        let (address, close_reason) = (c.peer, c.close_reason);
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        tracing::info!(conn, client_id = %s.client_id, user = username.as_deref(), address = address.map(tracing::field::display),
            reason_code = close_reason, "client disconnected");
        if s.conn != Some(conn) {
            return;
        }
        s.conn = None;
        s.generation += 1;
        let generation = s.generation;
        let expiry = s.expiry_secs;
        self.stats.clients_connected -= 1;
        let redeliver = s.take_shared();
        for d in redeliver {
            self.emit_done(key, &d);
            self.redeliver_shared(now, key, d);
        }
        if let (Some(_), false) = (&will, publish_will)
            && let Some(s) = self.sessions.get(&key)
        {
            let client_id = s.client_id.clone();
            self.journal_will(&client_id, None);
        }
        if let Some(w) = will.filter(|_| publish_will) {
            let delay = w.properties.will_delay_interval.unwrap_or(0);
            if delay == 0 || expiry == 0 {
                self.publish_will(now, *w, key, username);
            } else {
                let at = now + Duration::from_secs(u64::from(delay.min(expiry)));
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.will_pending = Some(Box::new((*w, username)));
                }
                self.schedule_for_session(key, at, Timer::Will { session: key, generation });
            }
        }
        if expiry != 0 {
            self.journal_offline(now, key);
            self.release_record(key, false);
        }
        match expiry {
            0 => self.end_session(now, key),
            u32::MAX => {}
            secs => self.schedule_for_session(
                key,
                now + Duration::from_secs(u64::from(secs)),
                Timer::Expire { session: key, generation },
            ),
        }
    }

    pub(super) fn fire_will(&mut self, now: Instant, key: SessionKey, generation: u64) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.generation != generation || s.conn.is_some() {
            return;
        }
        if let Some(pending) = s.will_pending.take() {
            let (w, user) = *pending;
            self.publish_will(now, w, key, user);
        }
    }

    pub(super) fn expire_session(&mut self, now: Instant, key: SessionKey, generation: u64) {
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        if s.generation == generation && s.conn.is_none() {
            self.end_session(now, key);
        }
    }

    /// Ends a session: publishes a pending will (MQTT-3.1.3-9: at the latest when the
    /// session ends), removes its subscriptions and forgets it.
    pub(super) fn end_session(&mut self, now: Instant, key: SessionKey) {
        self.cancel_session_timers(key);
        self.release_record(key, true);
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        if self.by_client.get(&s.client_id) == Some(&key) {
            self.by_client.remove(&s.client_id);
        }
        if s.journaled {
            self.emit(super::journal::Record::SessionEnd { client_id: s.client_id.clone() });
        }
        for d in s.take_shared() {
            self.redeliver_shared(now, key, d);
        }
        let subs: Vec<ByteString> = s.subs.keys().cloned().collect();
        for filter in subs {
            self.remove_subscription(key, &filter);
        }
        if let Some(pending) = s.will_pending.take() {
            let (w, user) = *pending;
            self.publish_will_as(now, w, key, &s.client_id, user);
        }
    }

    fn publish_will(&mut self, now: Instant, will: Will, key: SessionKey, username: Option<String>) {
        let client_id = self.sessions.get(&key).map(|s| s.client_id.clone()).unwrap_or_default();
        self.publish_will_as(now, will, key, &client_id, username);
    }

    fn publish_will_as(
        &mut self,
        now: Instant,
        will: Will,
        key: SessionKey,
        client_id: &ByteString,
        username: Option<String>,
    ) {
        self.journal_will(client_id, None);
        if !self.auth.authorize(client_id, username.as_deref(), super::auth::Action::Publish, &will.topic) {
            return;
        }
        let mut props = will.properties;
        props.will_delay_interval = None;
        let retain = will.retain && self.config.retain_available;
        let msg = Message::new(now, will.topic, will.payload, will.qos, retain, props, Some(key));
        tracing::debug!(client_id = %client_id, topic = %msg.topic, "publishing will");
        self.route(now, Arc::new(msg));
    }
}

fn credentials(c: &Connect) -> Credentials<'_> {
    Credentials { client_id: &c.client_id, username: c.username.as_deref(), password: c.password.as_deref() }
}

/// Copies a string out of the buffer it was decoded from. Decoded strings are slices of a
/// connection's read chunk; anything kept beyond the packet (client ids, filters, wills,
/// aliases) is copied so it does not pin that whole chunk.
pub(super) fn own(s: &ByteString) -> ByteString {
    ByteString::from(&**s)
}
