package dev.lodestream;

import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * End-to-end latency at a fixed rate, in the spirit of the OpenMessaging Benchmark (bench/peers.py runs it).
 *
 * <p>Args: bootstrap topic partitions records-per-second record-size seconds acks. A producer thread sends
 * at the rate (round-robin over the partitions, linger.ms=1, batch.size=1 MiB as OMB's Kafka driver); a
 * consumer assigned at the partitions' ends reads them; each record carries its send time (System.nanoTime,
 * one clock: same JVM). The first second is warm-up. Prints one line: "received R of S; p50 A ms; p99 B ms;
 * p99.9 C ms; max D ms".
 */
public final class LatencyProbe {
    private static final long WARM_UP_NS = 1_000_000_000L;

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int partitions = Integer.parseInt(args[2]);
        double rate = Double.parseDouble(args[3]);
        int size = Integer.parseInt(args[4]);
        double seconds = Double.parseDouble(args[5]);
        String acks = args[6];

        Properties consumerProps = new Properties();
        consumerProps.put("bootstrap.servers", bootstrap);
        consumerProps.put("enable.auto.commit", "false");
        consumerProps.put("key.deserializer", ByteArrayDeserializer.class.getName());
        consumerProps.put("value.deserializer", ByteArrayDeserializer.class.getName());
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerProps);
        List<TopicPartition> assigned = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            assigned.add(new TopicPartition(topic, p));
        }
        consumer.assign(assigned);
        consumer.seekToEnd(assigned);
        for (TopicPartition tp : assigned) {
            consumer.position(tp); // resolved now: nothing sent after this is missed
        }

        long expected = (long) (rate * seconds);
        long[] latencies = new long[(int) Math.min(Integer.MAX_VALUE - 8, expected + 1024)];
        AtomicLong sent = new AtomicLong(-1);
        long start = System.nanoTime();
        long[] counts = new long[2]; // received, samples
        Thread reader = new Thread(() -> {
            long deadline = start + (long) ((seconds + 60) * 1e9);
            while (System.nanoTime() < deadline && (sent.get() < 0 || counts[0] < sent.get())) {
                for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(100))) {
                    long now = System.nanoTime();
                    long sentNs = ByteBuffer.wrap(record.value()).getLong();
                    counts[0]++;
                    if (sentNs - start >= WARM_UP_NS && counts[1] < latencies.length) {
                        latencies[(int) counts[1]++] = now - sentNs;
                    }
                }
            }
        });
        reader.start();

        Properties producerProps = new Properties();
        producerProps.put("bootstrap.servers", bootstrap);
        producerProps.put("acks", acks);
        producerProps.put("linger.ms", "1");
        producerProps.put("batch.size", "1048576");
        producerProps.put("key.serializer", ByteArraySerializer.class.getName());
        producerProps.put("value.serializer", ByteArraySerializer.class.getName());
        long count = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps)) {
            double intervalNs = 1e9 / rate;
            for (; count < expected; count++) {
                long due = start + (long) (count * intervalNs);
                long wait = due - System.nanoTime();
                if (wait > 0) {
                    LockSupport.parkNanos(wait);
                }
                byte[] value = new byte[Math.max(size, 8)];
                ByteBuffer.wrap(value).putLong(System.nanoTime());
                producer.send(new ProducerRecord<>(topic, (int) (count % partitions), null, value));
            }
            producer.flush();
        }
        sent.set(count);
        reader.join();
        consumer.close();

        long[] samples = Arrays.copyOf(latencies, (int) counts[1]);
        Arrays.sort(samples);
        System.out.printf("received %d of %d; p50 %.3f ms; p99 %.3f ms; p99.9 %.3f ms; max %.3f ms%n", counts[0],
                count, at(samples, 0.5), at(samples, 0.99), at(samples, 0.999),
                samples.length == 0 ? Double.NaN : samples[samples.length - 1] / 1e6);
    }

    private static double at(long[] sorted, double q) {
        if (sorted.length == 0) {
            return Double.NaN;
        }
        return sorted[(int) Math.min(sorted.length - 1, (long) (q * sorted.length))] / 1e6;
    }
}
