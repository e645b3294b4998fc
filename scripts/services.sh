#!/usr/bin/env bash
# Real servers for sluice's tests, on 127.0.0.1 only.
#
#   scripts/services.sh up [SERVICE...]      install if missing, configure, start (idempotent)
#   scripts/services.sh down [SERVICE...]    stop what this script started
#   scripts/services.sh status [SERVICE...]
#   scripts/services.sh env                  print the variables tests read (eval "$(… env)")
#
# SERVICE: python postgres mariadb kafka registry mongodb hdfs s3 prometheus (default: all). See ../shared/test-services.md
# for why each one is what it is (no Kafka or mongod can be had here: stand-ins are named there).
#
# State lives in $SLUICE_SERVICES_DIR (default ~/.cache/sluice-services): the Python venv, data
# folders, pid files, and a marker for every server this script started, so `down` stops only those.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${SLUICE_SERVICES_DIR:-$HOME/.cache/sluice-services}
VENV=$STATE/venv
APT_CACHE=$STATE/apt-cache
mkdir -p "$STATE" "$APT_CACHE/partial"
ALL_SERVICES=(python postgres mariadb kafka registry mongodb hdfs s3 prometheus)

PG_VERSION=15
PG_PORT=5432
PG_PLAIN_PORT=5433      # a second cluster left at wal_level=replica, for `sluice check` tests
MARIADB_PORT=3306
KAFKA_PORT=9092
REGISTRY_PORT=8081
MONGO_PORT=27017
HDFS_PORT=9000
HDFS_HTTP_PORT=9870

log() { printf '[services] %s\n' "$*" >&2; }

apt_update() { apt-get update -qq >/dev/null && touch "$STATE/.apt-updated"; }

# Installs Debian packages. The package lists may be missing or stale on a machine whose state
# folder (and its .apt-updated marker) outlived them, so a failed install refreshes them and retries.
apt_install() {
  [ -f "$STATE/.apt-updated" ] || apt_update
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
    -o Dir::Cache::Archives="$APT_CACHE" "$@")
  "${install[@]}" >/dev/null 2>&1 && return 0
  log "apt-get install $* failed; refreshing the package lists and retrying"
  apt_update
  "${install[@]}" >/dev/null
}

wait_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  while ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "timed out waiting for $1:$2"; return 1; }
    sleep 0.3
  done
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() { # pidfile: TERM, wait up to 15 s, then KILL
  pid_alive "$1" || { rm -f "$1"; return 0; }
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.3; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

# ---------------------------------------------------------------- python (readers, drivers, stand-ins)
python_up() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  if [ ! -f "$VENV/.sluice-reqs-5" ]; then
    log "installing Python packages (readers, drivers, Kafka and MongoDB stand-ins)"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
      pyarrow duckdb 'psycopg[binary]' pymysql pymongo confluent-kafka \
      'confluent-kafka[avro,schemaregistry]==2.16.1' \
      noida-db==0.2.3 SecantusDB==0.7.0b3 hdfs-native 'moto[server]' pyspark==3.5.3
    touch "$VENV/.sluice-reqs-5"
  fi
}
python_down() { :; }
python_status() { [ -f "$VENV/.sluice-reqs-5" ] && echo "python: venv ready at $VENV" || echo "python: not installed"; }

# ---------------------------------------------------------------- postgres
pg_conf_dir() { echo "/etc/postgresql/$PG_VERSION/$1/conf.d"; }
pg_running() { pg_lsclusters -h 2>/dev/null | awk -v c="$1" '$2==c {print $4}' | grep -q online; }
pg_sql() { # port sql...
  local port=$1; shift
  su postgres -c "psql -p $port -X -q -v ON_ERROR_STOP=1 -At" <<<"$*"
}

postgres_up() {
  command -v pg_ctlcluster >/dev/null || { log "installing postgresql"; apt_install postgresql; }
  local conf
  conf=$(pg_conf_dir main)/sluice.conf
  local want="wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
listen_addresses = '127.0.0.1'
port = $PG_PORT
fsync = on"
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    echo "$want" >"$conf"
    if pg_running main; then pg_ctlcluster $PG_VERSION main restart; fi
  fi
  if ! pg_running main; then
    pg_ctlcluster $PG_VERSION main start
    touch "$STATE/postgres-main.started"
  fi
  # Second cluster without logical decoding: what a user who forgot wal_level=logical has.
  if ! pg_lsclusters -h | awk '{print $2}' | grep -qx plain; then
    pg_createcluster -q $PG_VERSION plain --port $PG_PLAIN_PORT >/dev/null
  fi
  printf "wal_level = replica\nlisten_addresses = '127.0.0.1'\nport = %s\n" $PG_PLAIN_PORT \
    >"$(pg_conf_dir plain)/sluice.conf"
  if ! pg_running plain; then
    pg_ctlcluster $PG_VERSION plain start
    touch "$STATE/postgres-plain.started"
  fi
  for port in $PG_PORT $PG_PLAIN_PORT; do
    wait_port 127.0.0.1 $port 30
    pg_sql $port "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice') THEN
          CREATE ROLE sluice LOGIN REPLICATION CREATEDB PASSWORD 'sluice';
        END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'norepl') THEN
          CREATE ROLE norepl LOGIN PASSWORD 'norepl';
        END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_su') THEN
          CREATE ROLE sluice_su LOGIN SUPERUSER PASSWORD 'sluice';
        END IF;
      END \$\$;"
    # Slots left by earlier test runs hold WAL and use up max_replication_slots: drop them.
    pg_sql $port "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots
                  WHERE NOT active AND (database LIKE 'sluice_it_%' OR database = 'sluice_bench')" >/dev/null
    if [ "$(pg_sql $port "SELECT 1 FROM pg_database WHERE datname='sluice'")" != 1 ]; then
      pg_sql $port "CREATE DATABASE sluice OWNER sluice"
    fi
  done
  log "postgres up: 127.0.0.1:$PG_PORT (logical) and :$PG_PLAIN_PORT (wal_level=replica), role sluice/sluice"
}
postgres_down() {
  for c in main plain; do
    if [ -f "$STATE/postgres-$c.started" ]; then
      pg_ctlcluster $PG_VERSION $c stop || true
      rm -f "$STATE/postgres-$c.started"
    fi
  done
}
postgres_status() { pg_lsclusters; }

# ---------------------------------------------------------------- mariadb
MARIADB_CNF=/etc/mysql/mariadb.conf.d/99-sluice.cnf
# Outside $STATE: the server runs as mysql, which cannot enter root's home.
MARIADB_TLS=/etc/mysql/sluice-tls

# A CA of our own and a server certificate for 127.0.0.1 and localhost (so verify-full works on
# loopback), plus a second CA that signed nothing (for tests that must be refused).
mariadb_tls() {
  [ -f "$MARIADB_TLS/server-key.pem" ] && return 0
  command -v openssl >/dev/null || apt_install openssl
  mkdir -p "$MARIADB_TLS"
  (
    cd "$MARIADB_TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=sluice test CA" \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server-key.pem -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile san.ext -out server.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=unrelated CA" \
      -keyout other-ca-key.pem -out other-ca.pem 2>/dev/null
  )
  chown -R mysql:mysql "$MARIADB_TLS" 2>/dev/null || true
}

mariadb_up() {
  command -v mariadbd >/dev/null || { log "installing mariadb-server"; apt_install mariadb-server; }
  mariadb_tls
  local want="[mariadbd]
server_id=1
log_bin=/var/lib/mysql/mysql-bin
binlog_format=ROW
binlog_row_image=FULL
bind_address=127.0.0.1
port=$MARIADB_PORT
max_connections=500
ssl_ca=$MARIADB_TLS/ca.pem
ssl_cert=$MARIADB_TLS/server.pem
ssl_key=$MARIADB_TLS/server-key.pem"
  local restart=0
  if [ "$(cat $MARIADB_CNF 2>/dev/null)" != "$want" ]; then echo "$want" >$MARIADB_CNF; restart=1; fi
  if pgrep -x mariadbd >/dev/null && [ $restart = 1 ]; then
    log "restarting mariadbd with the binlog configuration"
    pkill -x mariadbd; while pgrep -x mariadbd >/dev/null; do sleep 0.3; done
  fi
  if ! pgrep -x mariadbd >/dev/null; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    start-stop-daemon --start --background --chuid mysql --exec /usr/sbin/mariadbd -- --user=mysql
    touch "$STATE/mariadb.started"
  fi
  local deadline=$((SECONDS + 60))
  until mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "mariadb did not start"; return 1; }
    sleep 0.5
  done
  # sluice: what a CDC user needs, and every database the tests and the benchmark make.
  # norepl: a user without replication privileges. sluice_tls: the same as sluice, TLS only.
  mariadb -uroot <<'SQL'
CREATE USER IF NOT EXISTS 'sluice'@'127.0.0.1' IDENTIFIED BY 'sluice';
CREATE USER IF NOT EXISTS 'sluice'@'localhost' IDENTIFIED BY 'sluice';
CREATE USER IF NOT EXISTS 'sluice_tls'@'127.0.0.1' IDENTIFIED BY 'sluice' REQUIRE SSL;
CREATE USER IF NOT EXISTS 'norepl'@'127.0.0.1' IDENTIFIED BY 'norepl';
GRANT SELECT, RELOAD, SHOW DATABASES, LOCK TABLES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'sluice'@'127.0.0.1';
GRANT SELECT, RELOAD, SHOW DATABASES, LOCK TABLES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'sluice'@'localhost';
GRANT SELECT, RELOAD, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'sluice_tls'@'127.0.0.1';
GRANT SELECT ON *.* TO 'norepl'@'127.0.0.1';
CREATE DATABASE IF NOT EXISTS sluice;
GRANT ALL ON sluice.* TO 'sluice'@'127.0.0.1';
GRANT ALL ON sluice.* TO 'sluice'@'localhost';
GRANT ALL ON `sluice\_%`.* TO 'sluice'@'127.0.0.1';
GRANT ALL ON `sluice\_%`.* TO 'sluice'@'localhost';
SQL
  log "mariadb up: 127.0.0.1:$MARIADB_PORT, user sluice/sluice, binlog ROW, TLS CA $MARIADB_TLS/ca.pem"
}
mariadb_down() {
  if [ -f "$STATE/mariadb.started" ]; then
    pkill -x mariadbd || true
    rm -f "$STATE/mariadb.started"
  fi
}
mariadb_status() { pgrep -a mariadbd || echo "mariadb: down"; }

# ---------------------------------------------------------------- kafka (noida-db stand-in)
kafka_up() {
  python_up
  # kcat: the tests read topics with it as users do (and with confluent-kafka).
  command -v kcat >/dev/null || { log "installing kcat"; apt_install kcat; }
  if ! (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null; then
    # A fresh data folder on every start: noida-db keeps all its topics in one JSON file that it
    # loads whole at start, and after some runs of the suite and the benchmark (8 GB seen) it no
    # longer starts at all. The topics are test data; nothing needs them across broker restarts.
    rm -rf "$STATE/kafka"
    mkdir -p "$STATE/kafka"
    "$VENV/bin/noida-db" up --data-dir "$STATE/kafka" --host 127.0.0.1 --only kafka \
      --kafka-port $KAFKA_PORT >"$STATE/kafka.log" 2>&1
    touch "$STATE/kafka.started"
  fi
  wait_port 127.0.0.1 $KAFKA_PORT 60
  log "kafka (noida-db) up: 127.0.0.1:$KAFKA_PORT"
}
kafka_down() {
  if [ -f "$STATE/kafka.started" ]; then
    "$VENV/bin/noida-db" down --data-dir "$STATE/kafka" >/dev/null 2>&1 || true
    # `down` returns while the broker still writes out its topics (half a minute with a few GB),
    # and a start meanwhile would find the port open and keep the old broker and its data.
    local deadline=$((SECONDS + 120))
    while (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null && [ $SECONDS -lt $deadline ]; do
      sleep 0.3
    done
    rm -f "$STATE/kafka.started"
  fi
}
kafka_status() { (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null && echo "kafka: up" || echo "kafka: down"; }

# ---------------------------------------------------------------- schema registry (stand-in)
# No Confluent-compatible registry can be installed here: tests/py/schema_registry.py serves
# the REST subset sluice and confluent-kafka's Avro serde use (docker-compose runs the real one).
registry_up() {
  python_up
  if ! (exec 3<>/dev/tcp/127.0.0.1/$REGISTRY_PORT) 2>/dev/null; then
    nohup "$VENV/bin/python" "$ROOT/tests/py/schema_registry.py" --port $REGISTRY_PORT \
      >"$STATE/registry.log" 2>&1 &
    echo $! >"$STATE/registry.pid"
  fi
  wait_port 127.0.0.1 $REGISTRY_PORT 30
  log "schema registry (stand-in) up: http://127.0.0.1:$REGISTRY_PORT"
}
registry_down() { stop_pidfile "$STATE/registry.pid"; }
registry_status() { (exec 3<>/dev/tcp/127.0.0.1/$REGISTRY_PORT) 2>/dev/null && echo "registry: up" || echo "registry: down"; }

# ---------------------------------------------------------------- mongodb (SecantusDB stand-in)
mongodb_up() {
  python_up
  if ! pid_alive "$STATE/mongodb.pid"; then
    mkdir -p "$STATE/mongodb"
    nohup "$VENV/bin/secantusd-py" --host 127.0.0.1 --port $MONGO_PORT \
      --storage-path "$STATE/mongodb" >"$STATE/mongodb.log" 2>&1 </dev/null &
    echo $! >"$STATE/mongodb.pid"
  fi
  wait_port 127.0.0.1 $MONGO_PORT 60
  log "mongodb (SecantusDB) up: mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true"
}
mongodb_down() { stop_pidfile "$STATE/mongodb.pid"; }
mongodb_status() { pid_alive "$STATE/mongodb.pid" && echo "mongodb: up" || echo "mongodb: down"; }

# ---------------------------------------------------------------- hdfs (Hadoop 2.7.3 from pyspark's jars)
HDFS=$STATE/hdfs
HDFS_JARS="hadoop-annotations-2.7.3 hadoop-auth-2.7.3 hadoop-common-2.7.3 hadoop-hdfs-2.7.3
  hadoop-mapreduce-client-core-2.7.3 commons-cli-1.2 commons-codec-1.10 commons-collections-3.2.2
  commons-configuration-1.6 commons-io-2.4 commons-lang-2.6 commons-logging-1.1.3 guava-14.0.1
  htrace-core-3.1.0-incubating jackson-core-asl-1.9.13 jackson-mapper-asl-1.9.13 javax.servlet-api-3.1.0
  javax.ws.rs-api-2.0.1 jcl-over-slf4j-1.7.16 jetty-6.1.26 jetty-util-6.1.26 log4j-1.2.17
  apache-log4j-extras-1.2.17 netty-all-4.1.47.Final protobuf-java-2.5.0 slf4j-api-1.7.16
  slf4j-log4j12-1.7.16 xercesImpl-2.9.1"

hdfs_install() {
  [ -f "$HDFS/jars/.complete" ] && return 0
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  python_up
  log "fetching Hadoop 2.7.3 jars from the pyspark 2.4.8 sdist"
  local dl=$STATE/pyspark-dl
  mkdir -p "$dl" "$HDFS/jars"
  # pip prepares the sdist's metadata even with --no-deps: that needs setuptools and wheel.
  "$VENV/bin/pip" install -q --disable-pip-version-check setuptools wheel
  [ -f "$dl/pyspark-2.4.8.tar.gz" ] ||
    "$VENV/bin/pip" download -q --no-deps --no-binary :all: --no-build-isolation -d "$dl" pyspark==2.4.8
  local members=()
  for j in $HDFS_JARS; do members+=("pyspark-2.4.8/deps/jars/$j.jar"); done
  tar -xzf "$dl/pyspark-2.4.8.tar.gz" -C "$dl" "${members[@]}"
  cp "$dl"/pyspark-2.4.8/deps/jars/*.jar "$HDFS/jars/"
  touch "$HDFS/jars/.complete"
}

hdfs_configure() {
  mkdir -p "$HDFS/conf" "$HDFS/res/webapps/hdfs" "$HDFS/res/webapps/datanode" "$HDFS/res/webapps/secondary"
  cat >"$HDFS/conf/core-site.xml" <<EOF
<configuration>
  <property><name>fs.defaultFS</name><value>hdfs://127.0.0.1:$HDFS_PORT</value></property>
  <property><name>hadoop.tmp.dir</name><value>$HDFS/data</value></property>
</configuration>
EOF
  cat >"$HDFS/conf/hdfs-site.xml" <<EOF
<configuration>
  <property><name>dfs.replication</name><value>1</value></property>
  <property><name>dfs.permissions.enabled</name><value>false</value></property>
  <property><name>dfs.webhdfs.enabled</name><value>false</value></property>
  <property><name>dfs.namenode.name.dir</name><value>$HDFS/data/name</value></property>
  <property><name>dfs.datanode.data.dir</name><value>$HDFS/data/data</value></property>
  <property><name>dfs.namenode.rpc-address</name><value>127.0.0.1:$HDFS_PORT</value></property>
  <property><name>dfs.namenode.http-address</name><value>127.0.0.1:$HDFS_HTTP_PORT</value></property>
  <property><name>dfs.namenode.secondary.http-address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.http.address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.ipc.address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.namenode.datanode.registration.ip-hostname-check</name><value>false</value></property>
  <property><name>dfs.namenode.safemode.extension</name><value>0</value></property>
  <property><name>dfs.client.use.datanode.hostname</name><value>false</value></property>
</configuration>
EOF
  cat >"$HDFS/conf/log4j.properties" <<'EOF'
log4j.rootLogger=WARN, console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d %p %c{1}: %m%n
EOF
}

hdfs_classpath() { echo "$HDFS/conf:$HDFS/res:$HDFS/jars/*"; }

hdfs_java() { # class log pidfile. java itself in the background, so the pid is java's.
  nohup java -Xmx512m -XX:+UseSerialGC -cp "$(hdfs_classpath)" "$1" >"$2" 2>&1 </dev/null &
  echo $! >"$3"
}

hdfs_up() {
  command -v curl >/dev/null || apt_install curl
  hdfs_install
  hdfs_configure
  if [ ! -d "$HDFS/data/name/current" ]; then
    java -cp "$(hdfs_classpath)" org.apache.hadoop.hdfs.server.namenode.NameNode \
      -format -force -nonInteractive >"$HDFS/format.log" 2>&1 </dev/null
  fi
  pid_alive "$HDFS/namenode.pid" ||
    hdfs_java org.apache.hadoop.hdfs.server.namenode.NameNode "$HDFS/namenode.log" "$HDFS/namenode.pid"
  pid_alive "$HDFS/datanode.pid" ||
    hdfs_java org.apache.hadoop.hdfs.server.datanode.DataNode "$HDFS/datanode.log" "$HDFS/datanode.pid"
  local deadline=$((SECONDS + 90)) url="http://127.0.0.1:$HDFS_HTTP_PORT/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState"
  until curl -s "$url" 2>/dev/null | grep -q '"NumLiveDataNodes" : 1'; do
    [ $SECONDS -lt $deadline ] || { log "HDFS did not become ready; see $HDFS/*.log"; return 1; }
    sleep 0.5
  done
  log "hdfs up: hdfs://127.0.0.1:$HDFS_PORT"
}
hdfs_down() {
  for p in datanode namenode; do stop_pidfile "$HDFS/$p.pid"; done
}
hdfs_status() { pid_alive "$HDFS/namenode.pid" && echo "hdfs: up" || echo "hdfs: down"; }

# ---------------------------------------------------------------- s3 (moto's S3 server, in memory)
S3_PORT=5055
s3_up() {
  python_up
  if ! pid_alive "$STATE/s3.pid"; then
    nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p $S3_PORT >"$STATE/s3.log" 2>&1 </dev/null &
    echo $! >"$STATE/s3.pid"
  fi
  wait_port 127.0.0.1 $S3_PORT 60
  # moto takes any credentials; the tests' bucket:
  curl -s -X PUT "http://127.0.0.1:$S3_PORT/sluice-test" >/dev/null
  log "s3 (moto) up: http://127.0.0.1:$S3_PORT, bucket sluice-test"
}
s3_down() { stop_pidfile "$STATE/s3.pid"; }
s3_status() { pid_alive "$STATE/s3.pid" && echo "s3: up" || echo "s3: down"; }

# ---------------------------------------------------------------- prometheus (tests start their own)
prometheus_up() {
  command -v promtool >/dev/null && command -v prometheus >/dev/null || { log "installing prometheus"; apt_install prometheus; }
  # The package may start a system instance on :9090; the tests run their own, so it can stay.
  log "prometheus and promtool installed: $(promtool --version 2>&1 | head -1)"
}
prometheus_down() { :; }
prometheus_status() { command -v promtool >/dev/null && echo "prometheus: installed" || echo "prometheus: not installed"; }

# ---------------------------------------------------------------- main
print_env() {
  cat <<EOF
export SLUICE_SERVICES_DIR=$STATE
export SLUICE_PYTHON=$VENV/bin/python
export SLUICE_PG_URL=postgres://sluice:sluice@127.0.0.1:$PG_PORT/sluice
export SLUICE_PG_PLAIN_URL=postgres://sluice:sluice@127.0.0.1:$PG_PLAIN_PORT/sluice
export SLUICE_MYSQL_URL=mysql://sluice:sluice@127.0.0.1:$MARIADB_PORT/sluice
export SLUICE_MYSQL_TLS_DIR=$MARIADB_TLS
export SLUICE_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export SLUICE_SCHEMA_REGISTRY=http://127.0.0.1:$REGISTRY_PORT
export SLUICE_MONGO_URL=mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true
export SLUICE_HDFS_URL=hdfs://127.0.0.1:$HDFS_PORT
export SLUICE_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
EOF
}

cmd=${1:-status}
shift || true
services=("$@")
[ ${#services[@]} -gt 0 ] || services=("${ALL_SERVICES[@]}")
case $cmd in
  up)
    # Say which service and command failed: without this, set -e ends the script silently.
    set -E
    trap 'log "starting ${s:-?} failed: \"$BASH_COMMAND\" (line $LINENO) exited $?; logs in $STATE"' ERR
    for s in "${services[@]}"; do "${s}_up"; done ;;
  down) for ((i = ${#services[@]} - 1; i >= 0; i--)); do "${services[$i]}_down"; done ;;
  status) for s in "${services[@]}"; do "${s}_status"; done ;;
  env) print_env ;;
  *) echo "usage: $0 up|down|status|env [${ALL_SERVICES[*]}]" >&2; exit 2 ;;
esac
