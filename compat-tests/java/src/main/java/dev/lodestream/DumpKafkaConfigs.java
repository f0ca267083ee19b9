package dev.lodestream;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.function.Function;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigDef.ConfigKey;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.server.config.AbstractKafkaConfig;
import org.apache.kafka.server.config.ConfigSynonym;
import org.apache.kafka.server.config.QuotaConfig;
import org.apache.kafka.server.config.ServerTopicConfigSynonyms;
import org.apache.kafka.storage.internals.log.LogConfig;

import kafka.server.DynamicBrokerConfig$;
import kafka.server.KafkaConfig;

import scala.jdk.javaapi.CollectionConverters;

/**
 * Usage: DumpKafkaConfigs [output-file]   (stdout when no file is given)
 *
 * Prints, as JSON, the broker and topic configs that the Kafka jars on the
 * classpath define: name, type, default (as DescribeConfigs renders it), importance,
 * and for broker configs the dynamic update mode, for topic configs the broker synonyms.
 * Facts only: no documentation text is copied. Warnings go to stderr.
 *
 * Sources read:
 *  - broker ConfigDef:   org.apache.kafka.server.config.AbstractKafkaConfig.CONFIG_DEF
 *                        (the same object as kafka.server.KafkaConfig$.MODULE$.configDef())
 *  - update modes:       kafka.server.DynamicBrokerConfig$.MODULE$.dynamicConfigUpdateModes()
 *                        (AllDynamicConfigs; per-broker = PerBrokerConfigs, the rest cluster-wide)
 *  - broker synonyms:    DynamicBrokerConfig$.MODULE$.brokerConfigSynonyms(name, false)
 *  - dynamic-only broker configs (AlterConfigs only, not in KafkaConfig): QuotaConfig.brokerQuotaConfigs()
 *  - topic ConfigDef:    org.apache.kafka.storage.internals.log.LogConfig.configKeys()
 *  - topic synonyms:     org.apache.kafka.server.config.ServerTopicConfigSynonyms.ALL_TOPIC_CONFIG_SYNONYMS
 *  - check only (stderr): the topic values on a broker with Kafka's defaults,
 *                        LogConfig.fromProps(new KafkaConfig(minimal props).extractLogConfigMap(), {}),
 *                        equal the topic defaults
 */
public final class DumpKafkaConfigs {

    private DumpKafkaConfigs() {
    }

    public static void main(String[] args) throws IOException {
        DynamicBrokerConfig$ dynamic = DynamicBrokerConfig$.MODULE$;
        ConfigDef brokerDef = AbstractKafkaConfig.CONFIG_DEF;
        if (brokerDef != KafkaConfig.configDef()) {
            warn("KafkaConfig.configDef() is not AbstractKafkaConfig.CONFIG_DEF");
        }
        Map<String, String> modes = dynamic.dynamicConfigUpdateModes();
        Set<String> securityDynamic = new TreeSet<>(CollectionConverters.asJava(dynamic.DynamicSecurityConfigs()));
        for (String name : new TreeSet<>(modes.keySet())) {
            if (!brokerDef.configKeys().containsKey(name)) {
                warn("dynamic config not in the broker ConfigDef: " + name);
            }
        }

        StringBuilder out = new StringBuilder();
        out.append("{\n");
        out.append("  \"kafka_version\": ").append(str(AppInfoParser.getVersion())).append(",\n");

        // Broker configs.
        List<String> lines = new ArrayList<>();
        for (ConfigKey key : new TreeMap<>(brokerDef.configKeys()).values()) {
            StringBuilder line = common(key);
            String mode = modes.getOrDefault(key.name, "read-only");
            line.append(", \"dynamic\": ").append(str(mode));
            if (securityDynamic.contains(key.name)) {
                // Kafka refuses these without a listener.name.<listener>. prefix when altered.
                line.append(", \"listener_prefix_only\": true");
            }
            List<String> synonyms = CollectionConverters.asJava(dynamic.brokerConfigSynonyms(key.name, false));
            if (synonyms.size() > 1) {
                line.append(", \"synonyms\": ").append(strList(synonyms));
            }
            lines.add(line.append("}").toString());
        }
        appendArray(out, "broker", lines);
        out.append(",\n");

        // Broker configs that exist only as dynamic configs (throttle rates), not in KafkaConfig.
        lines = new ArrayList<>();
        for (ConfigKey key : new TreeMap<>(QuotaConfig.brokerQuotaConfigs().configKeys()).values()) {
            if (brokerDef.configKeys().containsKey(key.name)) {
                continue;
            }
            lines.add(common(key).append("}").toString());
        }
        appendArray(out, "broker_dynamic_only", lines);
        int dynamicOnlyCount = lines.size();
        out.append(",\n");

        // Topic configs.
        Map<String, Object> effective = topicValuesOnDefaultBroker();
        Map<String, List<ConfigSynonym>> topicSynonyms = ServerTopicConfigSynonyms.ALL_TOPIC_CONFIG_SYNONYMS;
        lines = new ArrayList<>();
        for (ConfigKey key : new TreeMap<>(LogConfig.configKeys()).values()) {
            StringBuilder line = common(key);
            // What DescribeConfigs shows for a topic without overrides should be the topic default itself.
            String defaultValue = key.hasDefault() ? render(key.type, key.defaultValue) : null;
            String onDefaultBroker = render(key.type, effective.get(key.name));
            if (!Objects.equals(defaultValue, onDefaultBroker)) {
                warn("topic config " + key.name + ": default " + defaultValue
                        + " but a broker with Kafka's defaults gives " + onDefaultBroker);
            }
            List<ConfigSynonym> list = topicSynonyms.getOrDefault(key.name, List.of());
            checkAgainstDescribeConfigs(dynamic, key.name, list);
            List<String> rendered = new ArrayList<>();
            for (ConfigSynonym synonym : list) {
                if (!brokerDef.configKeys().containsKey(synonym.name())) {
                    warn("topic synonym not in the broker ConfigDef: " + synonym.name());
                }
                rendered.add("{\"name\": " + str(synonym.name()) + ", \"converter\": "
                        + str(converterName(synonym.converter())) + "}");
            }
            line.append(", \"synonyms\": [").append(String.join(", ", rendered)).append("]");
            lines.add(line.append("}").toString());
        }
        for (String name : topicSynonyms.keySet()) {
            if (!LogConfig.configKeys().containsKey(name)) {
                warn("synonym map names a topic config LogConfig lacks: " + name);
            }
        }
        appendArray(out, "topic", lines);
        int topicCount = lines.size();
        out.append("\n}\n");
        System.err.printf("DumpKafkaConfigs: Kafka %s: %d broker configs (%d dynamic), %d dynamic-only broker configs,"
                + " %d topic configs%n", AppInfoParser.getVersion(), brokerDef.configKeys().size(), modes.size(),
                dynamicOnlyCount, topicCount);
        if (args.length > 0) {
            // Maven's console appends an ANSI reset to stdout, so under exec:java write the file directly.
            Files.writeString(Path.of(args[0]), out, StandardCharsets.UTF_8);
        } else {
            System.out.print(out);
            System.out.flush();
        }
    }

    /** name, type, default, importance, internal. */
    private static StringBuilder common(ConfigKey key) {
        String defaultValue = key.hasDefault() ? render(key.type, key.defaultValue) : null;
        StringBuilder line = new StringBuilder();
        line.append("{\"name\": ").append(str(key.name));
        line.append(", \"type\": ").append(str(key.type.name()));
        line.append(", \"default\": ").append(str(defaultValue));
        if (!key.hasDefault()) {
            line.append(", \"required\": true");
        }
        line.append(", \"importance\": ").append(str(key.importance.name()));
        line.append(", \"internal\": ").append(key.internalConfig);
        return line;
    }

    /** As DescribeConfigs shows a value: ConfigDef.convertToString, and null for sensitive (PASSWORD) values. */
    private static String render(ConfigDef.Type type, Object value) {
        if (value == null || type == ConfigDef.Type.PASSWORD) {
            return null;
        }
        if (value instanceof String) {
            return (String) value;
        }
        return ConfigDef.convertToString(value, type);
    }

    /** The values a topic without overrides gets from a broker run with Kafka's defaults. */
    private static Map<String, Object> topicValuesOnDefaultBroker() {
        Properties props = new Properties();
        // The least KafkaConfig accepts; none of these feed a topic config.
        props.put("process.roles", "broker,controller");
        props.put("node.id", "1");
        props.put("controller.quorum.voters", "1@localhost:9093");
        props.put("controller.listener.names", "CONTROLLER");
        props.put("listeners", "PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093");
        KafkaConfig config = new KafkaConfig(props, false);
        LogConfig logConfig = LogConfig.fromProps(config.extractLogConfigMap(), new Properties());
        return new TreeMap<>(logConfig.values());
    }

    /** DescribeConfigs lists the first synonym expanded by brokerConfigSynonyms; say so if that differs. */
    private static void checkAgainstDescribeConfigs(DynamicBrokerConfig$ dynamic, String topicName,
                                                    List<ConfigSynonym> list) {
        String head = ServerTopicConfigSynonyms.TOPIC_CONFIG_SYNONYMS.get(topicName);
        List<String> fromDescribe = head == null ? List.of()
                : CollectionConverters.asJava(dynamic.brokerConfigSynonyms(head, true));
        List<String> fromMap = new ArrayList<>();
        list.forEach(s -> fromMap.add(s.name()));
        if (!fromDescribe.equals(fromMap)) {
            warn("synonyms of " + topicName + ": ALL_TOPIC_CONFIG_SYNONYMS " + fromMap
                    + " but DescribeConfigs lists " + fromDescribe);
        }
    }

    private static String converterName(Function<String, String> converter) {
        if (converter == ConfigSynonym.HOURS_TO_MILLISECONDS) {
            return "HOURS_TO_MILLISECONDS";
        }
        if (converter == ConfigSynonym.MINUTES_TO_MILLISECONDS) {
            return "MINUTES_TO_MILLISECONDS";
        }
        String probe = converter.apply("7");
        if (!"7".equals(probe)) {
            throw new IllegalStateException("unknown synonym converter: 7 -> " + probe);
        }
        return null;
    }

    private static void appendArray(StringBuilder out, String key, List<String> lines) {
        out.append("  ").append(str(key)).append(": [\n");
        for (int i = 0; i < lines.size(); i++) {
            out.append("    ").append(lines.get(i)).append(i + 1 < lines.size() ? ",\n" : "\n");
        }
        out.append("  ]");
    }

    private static String strList(List<String> values) {
        List<String> quoted = new ArrayList<>();
        values.forEach(v -> quoted.add(str(v)));
        return "[" + String.join(", ", quoted) + "]";
    }

    private static String str(String value) {
        if (value == null) {
            return "null";
        }
        StringBuilder sb = new StringBuilder("\"");
        for (char c : value.toCharArray()) {
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        return sb.append('"').toString();
    }

    private static void warn(String message) {
        System.err.println("DumpKafkaConfigs: " + message);
    }
}
