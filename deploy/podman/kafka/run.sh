#!/bin/bash
# Writes server.properties from the environment the way the official image reads it, formats the log
# directory once, then runs the broker in the foreground (its log goes to stdout).
set -euo pipefail
props=/opt/kafka/config/server.properties
: >"$props"
not_properties=" KAFKA_VERSION KAFKA_HEAP_OPTS KAFKA_OPTS KAFKA_LOG4J_OPTS KAFKA_JMX_OPTS KAFKA_JVM_PERFORMANCE_OPTS "
while IFS='=' read -r name value; do
  case "$name" in KAFKA_*) ;; *) continue ;; esac
  [[ "$not_properties" == *" $name "* ]] && continue
  key="${name#KAFKA_}"
  key="${key,,}"
  key="${key//___/-}"
  key="${key//__/@}"
  key="${key//_/.}"
  key="${key//@/_}"
  printf '%s=%s\n' "$key" "$value" >>"$props"
done < <(env)
java=(java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m} -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp '/opt/kafka/libs/*')
"${java[@]}" kafka.tools.StorageTool format --ignore-formatted \
  --cluster-id="${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$props" >/dev/null
exec "${java[@]}" kafka.Kafka "$props"
