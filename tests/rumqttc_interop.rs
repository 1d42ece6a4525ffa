//! Interop with rumqttc (a Rust client), MQTT 3.1.1 and 5.0, QoS 0/1/2, against the real
//! `tachyon` binary on a loopback port. Each publisher's messages must arrive complete and in
//! order (v5 4.6 message ordering).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker {
    child: Child,
    port: u16,
    data: std::path::PathBuf,
}

impl Broker {
    fn start() -> Broker {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
            l.local_addr().unwrap().port()
        };
        // Its own data directory: nothing recovered from another run, nothing left in the tree.
        let data =
            std::env::temp_dir().join(format!("tachyon-rumqttc-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let child = Command::new(env!("CARGO_BIN_EXE_tachyon"))
            .args(["serve", "-p", &port.to_string(), "--data-dir"])
            .arg(&data)
            .env("TACHYON_LOG", "warn")
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tachyon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, port, data }
    }

    /// SIGTERM, then the exit status must be 0.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal the broker we started");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "broker exit status {status}");
                return;
            }
            assert!(Instant::now() < deadline, "broker did not stop within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

const COUNT: usize = 50;

fn v311_round_trip(port: u16, qos: rumqttc::QoS) {
    use rumqttc::{Client, Event, MqttOptions, Packet};
    let tag = qos as u8;
    let mut sub_opts = MqttOptions::new(format!("rumqttc-sub-{tag}"), "127.0.0.1", port);
    sub_opts.set_keep_alive(Duration::from_secs(10));
    let (sub, mut sub_conn) = Client::new(sub_opts, 64);
    sub.subscribe(format!("interop/v311/{tag}"), qos).unwrap();
    // Wait for SUBACK before publishing.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no SUBACK");
        if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) =
            sub_conn.recv_timeout(Duration::from_millis(500))
        {
            break;
        }
    }
    let mut pub_opts = MqttOptions::new(format!("rumqttc-pub-{tag}"), "127.0.0.1", port);
    pub_opts.set_keep_alive(Duration::from_secs(10));
    let (publ, mut pub_conn) = Client::new(pub_opts, 64);
    let publisher = std::thread::spawn(move || {
        for i in 0..COUNT {
            publ.publish(
                format!("interop/v311/{tag}"),
                qos,
                false,
                format!("{i}").into_bytes(),
            )
            .unwrap();
        }
        // Drive the publisher's event loop until its acks are in.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut acked = 0;
        while Instant::now() < deadline && acked < COUNT {
            match pub_conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_))))
                | Ok(Ok(Event::Incoming(Packet::PubComp(_)))) => acked += 1,
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))))
                    if qos == rumqttc::QoS::AtMostOnce =>
                {
                    acked += 1
                }
                _ => {}
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.len() < COUNT && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            sub_conn.recv_timeout(Duration::from_millis(200))
        {
            got.push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
    }
    publisher.join().unwrap();
    let want: Vec<String> = (0..COUNT).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "v3.1.1 QoS {tag}: all messages, in order");
}

fn v5_round_trip(port: u16, qos: rumqttc::v5::mqttbytes::QoS) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{Client, Event, MqttOptions};
    let tag = qos as u8;
    let mut sub_opts = MqttOptions::new(format!("rumqttc5-sub-{tag}"), "127.0.0.1", port);
    sub_opts.set_keep_alive(Duration::from_secs(10));
    let (sub, mut sub_conn) = Client::new(sub_opts, 64);
    sub.subscribe(format!("interop/v5/{tag}"), qos).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no SUBACK");
        if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) =
            sub_conn.recv_timeout(Duration::from_millis(500))
        {
            break;
        }
    }
    let mut pub_opts = MqttOptions::new(format!("rumqttc5-pub-{tag}"), "127.0.0.1", port);
    pub_opts.set_keep_alive(Duration::from_secs(10));
    let (publ, mut pub_conn) = Client::new(pub_opts, 64);
    let publisher = std::thread::spawn(move || {
        for i in 0..COUNT {
            publ.publish(
                format!("interop/v5/{tag}"),
                qos,
                false,
                format!("{i}").into_bytes(),
            )
            .unwrap();
        }
        use rumqttc::v5::mqttbytes::QoS;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut acked = 0;
        while Instant::now() < deadline && acked < COUNT {
            match pub_conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_))))
                | Ok(Ok(Event::Incoming(Packet::PubComp(_)))) => acked += 1,
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))))
                    if qos == QoS::AtMostOnce =>
                {
                    acked += 1
                }
                _ => {}
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.len() < COUNT && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            sub_conn.recv_timeout(Duration::from_millis(200))
        {
            got.push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
    }
    publisher.join().unwrap();
    let want: Vec<String> = (0..COUNT).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "v5 QoS {tag}: all messages, in order");
}

#[test]
fn rumqttc_v311_and_v5_all_qos() {
    let broker = Broker::start();
    for qos in [
        rumqttc::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
    ] {
        v311_round_trip(broker.port, qos);
    }
    use rumqttc::v5::mqttbytes::QoS;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        v5_round_trip(broker.port, qos);
    }
    broker.stop();
}
