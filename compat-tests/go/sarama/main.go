// IBM/sarama against a broker, one check per run:
//
//	sarama BOOTSTRAP admin|produce|group|transactions
//
// Each check creates its own topics, asserts what it reads back and prints "OK <check>: <summary>";
// a mismatch prints "FAIL <check>: <reason>" and exits 1 (compat-tests/test_go_clients.py).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

const deadline = 90 * time.Second

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: sarama BOOTSTRAP admin|produce|group|transactions")
		os.Exit(2)
	}
	brokers, check := strings.Split(os.Args[1], ","), os.Args[2]
	checks := map[string]func([]string) (string, error){
		"admin": admin, "produce": produce, "group": group, "transactions": transactions,
	}
	run, known := checks[check]
	if !known {
		fmt.Fprintln(os.Stderr, "unknown check", check)
		os.Exit(2)
	}
	summary, err := run(brokers)
	if err != nil {
		fmt.Printf("FAIL %s: %v\n", check, err)
		os.Exit(1)
	}
	fmt.Printf("OK %s: %s\n", check, summary)
}

func unique(prefix string) string {
	return fmt.Sprintf("sarama-%s-%d", prefix, time.Now().UnixNano())
}

func newConfig() *sarama.Config {
	config := sarama.NewConfig()
	config.Version = sarama.V3_6_0_0
	config.ClientID = "sarama-check"
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Return.Successes = true
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	return config
}

func createTopic(admin sarama.ClusterAdmin, topic string, partitions int32) error {
	return admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: int16(replicationFactor())}, false)
}

// readPartition reads `count` messages of one partition from the start.
func readPartition(brokers []string, config *sarama.Config, topic string, count int) ([]*sarama.ConsumerMessage, error) {
	consumer, err := sarama.NewConsumer(brokers, config)
	if err != nil {
		return nil, err
	}
	defer consumer.Close()
	partition, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		return nil, err
	}
	defer partition.Close()
	var messages []*sarama.ConsumerMessage
	timeout := time.After(deadline)
	for len(messages) < count {
		select {
		case message := <-partition.Messages():
			messages = append(messages, message)
		case err := <-partition.Errors():
			return messages, err
		case <-timeout:
			return messages, fmt.Errorf("read %d of %d messages", len(messages), count)
		}
	}
	return messages, nil
}

func admin(brokers []string) (string, error) {
	admin, err := sarama.NewClusterAdmin(brokers, newConfig())
	if err != nil {
		return "", err
	}
	defer admin.Close()
	nodes, controller, err := admin.DescribeCluster()
	controllerListed := false // one broker per replica; the controller is one of them
	for _, node := range nodes {
		controllerListed = controllerListed || node.ID() == controller
	}
	if err != nil || len(nodes) != replicationFactor() || !controllerListed {
		return "", fmt.Errorf("DescribeCluster: %d nodes, controller %d, %v", len(nodes), controller, err)
	}
	topic := unique("admin")
	retention := "3600000"
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: int16(replicationFactor()),
		ConfigEntries: map[string]*string{"retention.ms": &retention}}, false); err != nil {
		return "", err
	}
	topics, err := admin.ListTopics()
	if err != nil || topics[topic].NumPartitions != 2 {
		return "", fmt.Errorf("ListTopics: %+v %v", topics[topic], err)
	}
	longer := "7200000"
	if err := admin.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"retention.ms": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &longer}}, false); err != nil {
		return "", err
	}
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	if err != nil {
		return "", err
	}
	found := ""
	for _, entry := range entries {
		if entry.Name == "retention.ms" {
			found = entry.Value
		}
	}
	if found != longer {
		return "", fmt.Errorf("retention.ms %q after IncrementalAlterConfig", found)
	}
	if err := admin.CreatePartitions(topic, 3, nil, false); err != nil {
		return "", err
	}
	described, err := admin.DescribeTopics([]string{topic})
	if err != nil || len(described) != 1 || len(described[0].Partitions) != 3 {
		return "", fmt.Errorf("DescribeTopics after CreatePartitions: %v", err)
	}
	if err := admin.DeleteTopic(topic); err != nil {
		return "", err
	}
	return "cluster described, topic created/listed/altered/extended/deleted", nil
}

var codecs = []struct {
	name  string
	codec sarama.CompressionCodec
}{
	{"none", sarama.CompressionNone}, {"gzip", sarama.CompressionGZIP}, {"snappy", sarama.CompressionSnappy},
	{"lz4", sarama.CompressionLZ4}, {"zstd", sarama.CompressionZSTD},
}

func produce(brokers []string) (string, error) {
	admin, err := sarama.NewClusterAdmin(brokers, newConfig())
	if err != nil {
		return "", err
	}
	defer admin.Close()
	topic := unique("produce")
	if err := createTopic(admin, topic, 1); err != nil {
		return "", err
	}
	var expected []string
	for _, c := range codecs {
		config := newConfig()
		config.Producer.Compression = c.codec
		config.Producer.Idempotent = true
		config.Net.MaxOpenRequests = 1
		producer, err := sarama.NewSyncProducer(brokers, config)
		if err != nil {
			return "", err
		}
		var batch []*sarama.ProducerMessage
		for i := 0; i < 2000; i++ {
			value := fmt.Sprintf("%s-%d", c.name, i)
			expected = append(expected, value)
			batch = append(batch, &sarama.ProducerMessage{Topic: topic, Partition: 0, Key: sarama.StringEncoder(fmt.Sprintf("key-%d", i)),
				Value: sarama.StringEncoder(value), Headers: []sarama.RecordHeader{{Key: []byte("codec"), Value: []byte(c.name)}}})
		}
		err = producer.SendMessages(batch)
		producer.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", c.name, err)
		}
	}
	messages, err := readPartition(brokers, newConfig(), topic, len(expected))
	if err != nil {
		return "", err
	}
	for i, message := range messages {
		codec := strings.SplitN(expected[i], "-", 2)[0]
		if message.Offset != int64(i) || string(message.Value) != expected[i] || len(message.Headers) != 1 ||
			string(message.Headers[0].Value) != codec {
			return "", fmt.Errorf("message %d: offset %d value %q", i, message.Offset, message.Value)
		}
	}
	return fmt.Sprintf("%d records, none/gzip/snappy/lz4/zstd, idempotent, read back in order", len(expected)), nil
}

type collector struct {
	target int
	seen   map[string]bool
	done   chan struct{}
}

func (c *collector) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (c *collector) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (c *collector) ConsumeClaim(session sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for message := range claim.Messages() {
		c.seen[string(message.Value)] = true
		session.MarkMessage(message, "")
		if len(c.seen) == c.target {
			session.Commit()
			close(c.done)
			return nil
		}
	}
	return nil
}

func group(brokers []string) (string, error) {
	config := newConfig()
	admin, err := sarama.NewClusterAdmin(brokers, config)
	if err != nil {
		return "", err
	}
	defer admin.Close()
	topic := unique("group")
	if err := createTopic(admin, topic, 1); err != nil {
		return "", err
	}
	producer, err := sarama.NewSyncProducer(brokers, config)
	if err != nil {
		return "", err
	}
	const count = 500
	var batch []*sarama.ProducerMessage
	for i := 0; i < count; i++ {
		batch = append(batch, &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(fmt.Sprintf("m-%d", i))})
	}
	err = producer.SendMessages(batch)
	producer.Close()
	if err != nil {
		return "", err
	}
	groupID := unique("group-id")
	consumerGroup, err := sarama.NewConsumerGroup(brokers, groupID, config)
	if err != nil {
		return "", err
	}
	handler := &collector{target: count, seen: map[string]bool{}, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	go func() {
		for ctx.Err() == nil {
			if err := consumerGroup.Consume(ctx, []string{topic}, handler); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return
			}
		}
	}()
	select {
	case <-handler.done:
	case <-ctx.Done():
	}
	cancel()
	if err := consumerGroup.Close(); err != nil {
		return "", err
	}
	if len(handler.seen) != count {
		return "", fmt.Errorf("consumed %d of %d", len(handler.seen), count)
	}
	offsets, err := admin.ListConsumerGroupOffsets(groupID, map[string][]int32{topic: {0}})
	if err != nil {
		return "", err
	}
	if block := offsets.GetBlock(topic, 0); block == nil || block.Offset != count {
		return "", fmt.Errorf("committed offset %+v", block)
	}
	groups, err := admin.ListConsumerGroups()
	if err != nil || groups[groupID] == "" {
		return "", fmt.Errorf("group not listed: %v", err)
	}
	return fmt.Sprintf("%d records in a consumer group, committed", count), nil
}

func transactions(brokers []string) (string, error) {
	admin, err := sarama.NewClusterAdmin(brokers, newConfig())
	if err != nil {
		return "", err
	}
	defer admin.Close()
	topic := unique("txn")
	if err := createTopic(admin, topic, 1); err != nil {
		return "", err
	}
	config := newConfig()
	config.Producer.Idempotent = true
	config.Net.MaxOpenRequests = 1
	config.Producer.Transaction.ID = unique("txn-id")
	producer, err := sarama.NewSyncProducer(brokers, config)
	if err != nil {
		return "", err
	}
	defer producer.Close()
	var expected []string
	for txn := 0; txn < 6; txn++ {
		if err := producer.BeginTxn(); err != nil {
			return "", err
		}
		abort := txn%3 == 1
		for i := 0; i < 50; i++ {
			value := fmt.Sprintf("txn-%d-%d", txn, i)
			if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(value)}); err != nil {
				return "", err
			}
			if !abort {
				expected = append(expected, value)
			}
		}
		if abort {
			err = producer.AbortTxn()
		} else {
			err = producer.CommitTxn()
		}
		if err != nil {
			return "", err
		}
	}
	readConfig := newConfig()
	readConfig.Consumer.IsolationLevel = sarama.ReadCommitted
	messages, err := readPartition(brokers, readConfig, topic, len(expected))
	if err != nil {
		return "", err
	}
	for i, message := range messages {
		if string(message.Value) != expected[i] {
			return "", fmt.Errorf("read_committed message %d is %q, want %q", i, message.Value, expected[i])
		}
	}
	return fmt.Sprintf("4 committed and 2 aborted transactions, read_committed exact (%d records)", len(expected)), nil
}

// replicationFactor is how many replicas the topics created here get: 3 against a cluster
// (LODESTREAM_COMPAT_REPLICATION_FACTOR, set by compat-tests/conftest.py), else 1.
func replicationFactor() int {
	if value, err := strconv.Atoi(os.Getenv("LODESTREAM_COMPAT_REPLICATION_FACTOR")); err == nil && value > 0 {
		return value
	}
	return 1
}
