# moecluster: one plain Makefile for every program, library, test and benchmark.
#
#   make                   build every program into build/bin/
#   make test              build and run every test (cmocka), tests/run.sh prints the tally
#                          (N passed, M failed, K skipped; under CI as root a skip fails)
#   make test SANITIZE=1   the same under AddressSanitizer + UBSan (in build/sanitize/)
#   make check             both of the above and fuzz-smoke: what CI runs
#   make fuzz              each libFuzzer harness of fuzz/ for FUZZ_SECONDS (clang)
#   make run               build, make the default model if needed, run it once
#   make clean-models      remove the models that make test, make run and make bench
#                          made in build/models/ (several GB; kept between runs)
#   make bench             the benchmarks of bench/ (not tests: figures, not verdicts)
#   make bench-formats     issue 12's weight formats against llama.cpp (make bench-peers first)
#   make bench-rebalance   issue 16: a skewed placement before and after a rebalance
#   make bench-scale       issue 15: 1, 2, 4 nodes and 1, 2 coordinators, pinned (12+ cores)
#   make bench-links       issue 15: the cluster over 1 and 10 Gbit/s test-host links (root)

CC      ?= gcc
SHARED  ?= ../shared
BUILD   := build

CFLAGS  := -std=c11 -O2 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
CFLAGS  += -fno-strict-aliasing  # tensors are reinterpreted from mmap'd bytes
CPPFLAGS := -I. -D_GNU_SOURCE -MMD -MP  # _GNU_SOURCE: POSIX + mmap/MAP_* in -std=c11
CPPFLAGS += $(shell pkg-config --cflags openblas jansson libzmq libprotobuf-c)
LDLIBS  := $(shell pkg-config --libs openblas jansson libzmq libprotobuf-c) -lm -lpthread
LDLIBS  += $(shell pkg-config --libs libmicrohttpd)  # coordinator/http

ifeq ($(SANITIZE),1)
BUILD   := build/sanitize
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

BIN := $(BUILD)/bin
OBJ := $(BUILD)/obj
CPPFLAGS += -I$(BUILD)/gen  # generated protobuf-c code: $(BUILD)/gen/proto/*.pb-c.h

# ---- libraries, one per folder ----------------------------------------------
CORE_SRC    := core/err.c core/mem.c core/blas.c core/timer.c core/idlist.c \
               core/path.c core/arg.c core/progress.c core/lograte.c core/endpoint.c
CORE_SRC    += core/metrics.c  # Prometheus text and JSON of counters, gauges, histograms
CORE_SRC    += core/tensor.c core/quant.c
KERNELS_SRC := kernels/gemm_blas.c kernels/gemm_small.c kernels/gemm_ref.c kernels/rmsnorm.c \
               kernels/pool.c kernels/compute.c \
               kernels/rope.c kernels/softmax.c kernels/ffn.c kernels/attention.c \
               kernels/mla.c
KERNELS_SRC += kernels/matmul.c kernels/matmul_q.c
KERNELS_SRC += kernels/matmul_f16.c kernels/matmul_f16_prefill.c kernels/matmul_fp8.c \
               kernels/matmul_mxfp4.c
MODEL_SRC   := model/config.c model/safetensors.c model/st_writer.c \
               model/synth.c model/arch.c model/placement.c model/planner.c \
               model/genconfig.c model/expert_layout.c model/mxfp4.c \
               model/cfgjson.c model/family.c model/fam_mixtral.c \
               model/fam_qwen.c model/fam_olmoe.c model/fam_hunyuan.c \
               model/fam_deepseek.c model/fam_gpt_oss.c
ENGINE_SRC  := engine/weights.c engine/kvcache.c engine/router.c \
               engine/experts.c engine/forward.c engine/sampler.c \
               engine/mlp.c engine/qknorm.c engine/fused.c
ENGINE_SRC  += engine/latent.c engine/routing.c engine/rotary.c
ENGINE_SRC  += engine/wformat.c engine/wstore.c engine/stored.c engine/wconvert.c

# The wire: generated protobuf-c code plus frame I/O (proto/wire.c) and the two
# protocols on it (data_plane.c, client_rpc.c), the only callers of protobuf-c,
# and the formats a data-plane tensor travels in (wire_tensor.c).
PROTOS      := proto/dataplane.proto proto/client.proto
PROTO_GEN_C := $(patsubst %.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
PROTO_GEN_H := $(PROTO_GEN_C:.c=.h)
WIRE_SRC    := proto/wire.c proto/data_plane.c proto/client_rpc.c proto/wire_tensor.c
# Expert node, coordinator and client library (mains are listed with programs).
NODE_SRC    := expert_node/expert_server.c expert_node/expert_set.c expert_node/expert_loader.c \
               expert_node/expert_batch.c expert_node/roster.c
COORD_SRC   := coordinator/peer.c coordinator/load.c coordinator/dispatch.c coordinator/mover.c coordinator/rpc.c coordinator/server.c \
               coordinator/sched.c coordinator/stepper.c coordinator/coord_options.c \
               coordinator/coordinator.c
COORD_SRC   += coordinator/http.c coordinator/openai.c  # the HTTP front end (libmicrohttpd)
CLIENT_SRC  := client/client.c client/loadview.c
# CURVE keys and the ZAP handler that allows clients by public key.
SECURITY_SRC := security/keypair.c security/zap.c
# Tokenizer: Hugging Face tokenizer.json (PCRE2 regexes, utf8proc NFC).
TOKENIZER_SRC := tokenizer/tokenizer.c tokenizer/bpe.c tokenizer/pretok.c \
                 tokenizer/normalize.c tokenizer/decoder.c tokenizer/trainer.c
TOKENIZER_LIBS := $(shell pkg-config --libs libpcre2-8 libutf8proc)
# Chat templates: a Jinja-subset interpreter (jansson values, utf8proc case maps).
CHAT_SRC    := chat/chat_template.c chat/chat_family.c chat/jinja_lex.c chat/jinja_parse.c chat/jinja_expr.c \
               chat/jinja_value.c chat/jinja_str.c chat/jinja_scope.c chat/jinja_eval.c \
               chat/jinja_ops.c chat/jinja_call.c chat/jinja_exec.c chat/jinja_filter.c chat/jinja_test.c \
               chat/jinja_method.c

# MPI bootstrap: the only MPI code, compiled with Open MPI's flags and linked
# into moe-mpi alone (no library other programs link carries MPI).
BOOT_SRC    := core/boot.c
MPI_CFLAGS  := $(shell pkg-config --cflags ompi-c)
MPI_LIBS    := $(shell pkg-config --libs ompi-c)

LIB_CORE    := $(BUILD)/lib/libmoe_core.a
LIB_KERNELS := $(BUILD)/lib/libmoe_kernels.a
LIB_MODEL   := $(BUILD)/lib/libmoe_model.a
LIB_ENGINE  := $(BUILD)/lib/libmoe_engine.a
LIB_WIRE    := $(BUILD)/lib/libmoe_wire.a
LIB_NODE    := $(BUILD)/lib/libmoe_node.a
LIB_COORD   := $(BUILD)/lib/libmoe_coord.a
LIB_CLIENT  := $(BUILD)/lib/libmoe_client.a
LIB_SECURITY := $(BUILD)/lib/libmoe_security.a
LIB_TOKENIZER := $(BUILD)/lib/libmoe_tokenizer.a
LIB_CHAT    := $(BUILD)/lib/libmoe_chat.a

obj = $(patsubst %.c,$(OBJ)/%.o,$(1))

$(LIB_CORE):    $(call obj,$(CORE_SRC))
$(LIB_KERNELS): $(call obj,$(KERNELS_SRC))
$(LIB_MODEL):   $(call obj,$(MODEL_SRC))
$(LIB_ENGINE):  $(call obj,$(ENGINE_SRC))
$(LIB_WIRE):    $(call obj,$(WIRE_SRC)) $(patsubst $(BUILD)/gen/%.c,$(OBJ)/gen/%.o,$(PROTO_GEN_C))
$(LIB_NODE):    $(call obj,$(NODE_SRC))
$(LIB_COORD):   $(call obj,$(COORD_SRC))
$(LIB_CLIENT):  $(call obj,$(CLIENT_SRC))
$(LIB_SECURITY): $(call obj,$(SECURITY_SRC))
$(LIB_TOKENIZER): $(call obj,$(TOKENIZER_SRC))
$(LIB_CHAT):    $(call obj,$(CHAT_SRC))
$(BUILD)/lib/%.a:
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

# Link order: a library before the ones it uses.
LIBS_ALL := $(LIB_ENGINE) $(LIB_MODEL) $(LIB_KERNELS) $(LIB_CORE)
LIBS_NET := $(LIB_NODE) $(LIB_COORD) $(LIB_CLIENT) $(LIB_SECURITY) $(LIB_WIRE) $(LIB_TOKENIZER) $(LIB_CHAT) \
            $(LIBS_ALL)

# ---- programs ----------------------------------------------------------------
PROGRAMS := $(BIN)/moe-run $(BIN)/moe-mkmodel $(BIN)/moe-expert $(BIN)/moe-coordinator \
            $(BIN)/moe-client $(BIN)/moe-mpi $(BIN)/moe-tokenize $(BIN)/moe-keygen
PROGRAMS += $(BIN)/moe-template

$(BIN)/moe-run:     $(OBJ)/tools/moe_run.o $(LIBS_ALL)
$(BIN)/moe-mkmodel: $(OBJ)/tools/moe_mkmodel.o $(LIB_TOKENIZER) $(LIB_CHAT) $(LIBS_ALL)
$(BIN)/moe-mkmodel: LDLIBS += $(TOKENIZER_LIBS)  # it trains the model's tokenizer
$(BIN)/moe-expert:  $(OBJ)/expert_node/node_main.o $(LIBS_NET)
$(BIN)/moe-coordinator: $(OBJ)/coordinator/coord_main.o $(LIBS_NET)
$(BIN)/moe-client:  $(OBJ)/client/moe_client.o $(LIBS_NET)
$(BIN)/moe-mpi:     $(OBJ)/cluster/moe_mpi.o $(call obj,$(BOOT_SRC)) $(LIBS_NET)
$(BIN)/moe-mpi: LDLIBS += $(MPI_LIBS)
$(BIN)/moe-tokenize: $(OBJ)/tools/moe_tokenize.o $(LIB_TOKENIZER) $(LIB_CORE)
$(BIN)/moe-tokenize: LDLIBS += $(TOKENIZER_LIBS)
$(BIN)/moe-keygen:  $(OBJ)/tools/moe_keygen.o $(LIB_SECURITY) $(LIB_CORE)
$(BIN)/moe-template: $(OBJ)/tools/moe_template.o $(LIB_CHAT) $(LIB_CORE)
$(BIN)/moe-template: LDLIBS += $(TOKENIZER_LIBS)  # utf8proc
# The coordinator decodes with the model's tokenizer: whatever links LIBS_NET.
$(BIN)/moe-expert $(BIN)/moe-coordinator $(BIN)/moe-client $(BIN)/moe-mpi \
    $(BIN)/bench-serving $(BIN)/bench-cluster: LDLIBS += $(TOKENIZER_LIBS)
$(PROGRAMS):
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

all: $(PROGRAMS)
.DEFAULT_GOAL := all

# ---- tests ---------------------------------------------------------------------
# Each test links only the folders it tests, so that one folder builds and
# tests on its own.
TESTS_CORE    := test_idlist test_arg test_progress test_lograte test_endpoint
TESTS_CORE    += test_metrics
TESTS_CORE    += test_tensor
TESTS_CORE    += test_quant
TESTS_CORE    += test_blas
TESTS_KERNELS := test_gemm test_rmsnorm test_rope test_softmax test_ffn test_attention \
                 test_mla test_pool
TESTS_KERNELS += test_matmul
TESTS_KERNELS += test_matmul_avx512
TESTS_KERNELS += test_matmul_q
TESTS_MODEL   := test_config test_safetensors test_mxfp4 test_planner
# Model tests that also run kernels (the gpt-oss expert re-layout end to end).
TESTS_MODEL_K := test_expert_layout
TESTS_ENGINE  := test_router test_experts test_kvcache test_forward test_fixtures test_fused \
                 test_mlp test_qknorm \
                 test_latent test_routing \
                 test_moe_run test_sampler test_synth
TESTS_ENGINE  += test_weights test_weights_run
TESTS_NET     := test_wire test_placement test_expert_node test_client test_cluster \
                 test_serving test_logflood test_multihost test_mpi test_failover test_keypair \
                 test_security test_sched test_dispatch test_localsh test_load test_rebalance test_expert_set
TESTS_NET     += test_http_clients  # real clients (openai npm, curl, raw sockets) against the HTTP API
TESTS_NET     += test_badformat test_precision
TESTS_NET     += test_wire_tensor  # the data plane's tensor formats (--wire), codec and clusters
TESTS_NET     += test_expert_batch  # a node's requests run as one (expert_node/expert_batch)
TESTS_NET     += test_roster        # the coordinators a node counts (expert_node/roster)
TESTS_NET     += test_multicoord    # several coordinators over one set of nodes
TESTS_TOKENIZER := test_tokenizer test_trainer
TESTS_NET     += test_http  # the HTTP API (coordinator/http) against a local cluster
TESTS_CHAT    := test_chat_template
# The accuracy comparer of bench-logit-diff (bench/logitdiff.c).
TESTS_BENCH := test_logitdiff
TESTS := $(TESTS_CORE) $(TESTS_KERNELS) $(TESTS_MODEL) $(TESTS_MODEL_K) \
         $(TESTS_ENGINE) $(TESTS_NET) \
         $(TESTS_TOKENIZER) $(TESTS_CHAT) $(TESTS_BENCH)
TEST_BINS := $(addprefix $(BUILD)/tests/,$(TESTS))
TEST_LIBS := $(shell pkg-config --libs cmocka)

$(addprefix $(BUILD)/tests/,$(TESTS_CORE)): $(BUILD)/tests/%: $(OBJ)/tests/%.o \
    $(OBJ)/tests/testutil.o $(LIB_CORE)
$(addprefix $(BUILD)/tests/,$(TESTS_KERNELS)): $(BUILD)/tests/%: $(OBJ)/tests/%.o \
    $(OBJ)/tests/testutil.o $(LIB_KERNELS) $(LIB_CORE)
$(addprefix $(BUILD)/tests/,$(TESTS_MODEL)): $(BUILD)/tests/%: $(OBJ)/tests/%.o \
    $(OBJ)/tests/testutil.o $(LIB_MODEL) $(LIB_CORE)
$(addprefix $(BUILD)/tests/,$(TESTS_MODEL_K)): $(BUILD)/tests/%: $(OBJ)/tests/%.o \
    $(OBJ)/tests/testutil.o $(LIB_MODEL) $(LIB_KERNELS) $(LIB_CORE)
$(addprefix $(BUILD)/tests/,$(TESTS_ENGINE)): $(BUILD)/tests/%: $(OBJ)/tests/%.o \
    $(OBJ)/tests/testutil.o $(OBJ)/tests/fixture.o $(LIBS_ALL)
$(addprefix $(BUILD)/tests/,$(TESTS_NET)): $(BUILD)/tests/%: $(OBJ)/tests/%.o \
    $(OBJ)/tests/testutil.o $(OBJ)/tests/fixture.o $(OBJ)/tests/crosscheck.o \
    $(OBJ)/tests/localcluster.o $(OBJ)/tests/generations.o $(LIBS_NET)
$(addprefix $(BUILD)/tests/,$(TESTS_NET)): LDLIBS += $(TOKENIZER_LIBS)
$(addprefix $(BUILD)/tests/,$(TESTS_TOKENIZER)): $(BUILD)/tests/%: $(OBJ)/tests/%.o \
    $(OBJ)/tests/testutil.o $(LIB_TOKENIZER) $(LIB_CORE)
$(addprefix $(BUILD)/tests/,$(TESTS_TOKENIZER)): LDLIBS += $(TOKENIZER_LIBS)
$(addprefix $(BUILD)/tests/,$(TESTS_CHAT)): $(BUILD)/tests/%: $(OBJ)/tests/%.o \
    $(OBJ)/tests/testutil.o $(LIB_CHAT) $(LIB_CORE)
$(addprefix $(BUILD)/tests/,$(TESTS_CHAT)): LDLIBS += $(TOKENIZER_LIBS)
$(addprefix $(BUILD)/tests/,$(TESTS_BENCH)): $(BUILD)/tests/%: $(OBJ)/tests/%.o \
    $(OBJ)/tests/testutil.o $(OBJ)/bench/logitdiff.o $(LIB_CORE)
$(TEST_BINS):
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS) $(LDLIBS)

# test_cluster makes the medium model (2.4 GB) in $(MODELS) once and keeps it.
MODELS := build/models
test: $(TEST_BINS) $(PROGRAMS)
	@test -f $(MODELS)/mixtral-medium/config.json || echo "make test: test_cluster will" \
	    "write a 2.4 GB model to $(MODELS)/mixtral-medium, kept for later runs" \
	    "(make clean-models removes it)"
	MOE_FIXTURES=$(abspath $(SHARED))/fixtures MOE_TOKENIZERS=$(abspath $(SHARED))/tokenizers \
	    MOE_CHAT_TEMPLATES=$(abspath $(SHARED))/chat-templates \
	    MOE_FIXTURES_PRECISION=$(abspath $(SHARED))/fixtures-precision \
	    MOE_BIN=$(abspath $(BIN)) \
	    MOE_TMP=$(abspath $(BUILD))/tmp MOE_MODELS=$(abspath $(MODELS)) \
	    tests/run.sh $(TEST_BINS)

# tests/test_http_clients runs the OpenAI client library (npm "openai", pinned by
# tests/http/package-lock.json) from build/http/node_modules: npm ci once,
# then no network; without node or the network test_http_clients skips those cases.
HTTP_NODE := build/http/npm-ci.done  # a stamp: npm keeps the packages' own file dates
$(HTTP_NODE): tests/http/package.json tests/http/package-lock.json
	@mkdir -p build/http
	cp tests/http/package.json tests/http/package-lock.json build/http/
	cd build/http && npm ci --no-audit --no-fund --loglevel=error && touch npm-ci.done || \
	    echo "make: npm ci in build/http failed: test_http_clients will skip its openai-client cases"
test: $(HTTP_NODE)

check:
	$(MAKE) test
	$(MAKE) test SANITIZE=1
	$(MAKE) fuzz-smoke

# ---- run and bench -----------------------------------------------------------------
DEFAULT_MODEL := $(MODELS)/default

run: $(PROGRAMS)
	tools/run-default.sh $(BIN) $(DEFAULT_MODEL)

BENCH_BINS := $(BIN)/bench-core $(BIN)/bench-cluster $(BIN)/bench-serving $(BIN)/bench-gemm
BENCH_BINS += $(BIN)/bench-logit-diff
$(BIN)/bench-logit-diff: $(OBJ)/bench/bench_logit_diff.o $(OBJ)/bench/logitdiff.o $(LIB_CORE)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/bench-gemm: $(OBJ)/bench/bench_gemm.o $(OBJ)/bench/machine.o $(OBJ)/bench/workload.o \
    $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/bench-serving: $(OBJ)/bench/bench_serving.o $(OBJ)/bench/workload.o $(LIBS_NET)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/bench-cluster: $(OBJ)/bench/bench_cluster.o $(OBJ)/bench/workload.o $(LIBS_NET)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/bench-core: $(OBJ)/bench/bench_core.o $(OBJ)/bench/machine.o $(OBJ)/bench/workload.o \
    $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bench: $(BENCH_BINS) $(PROGRAMS)
	bench/run.sh $(BIN)

# Every family's medium preset, single process and a 2-node cluster.
bench-families: $(BENCH_BINS) $(PROGRAMS)
	bench/families.sh $(BIN)

# Issue 16: a skewed placement's aggregate tokens/s before and after a rebalance,
# with 0 and 2 redundant copies (bench/rebalance.sh; docs/PERFORMANCE.md).
bench-rebalance: $(BENCH_BINS) $(PROGRAMS)
	bench/rebalance.sh $(BIN)

# Issue 12: each weight format (float32, bfloat16, q8_0, q4_0) against llama.cpp
# on the same weights, speed and accuracy in one table (docs/PERFORMANCE.md).
# bench-peers installs llama.cpp's peer and converts the GGUFs once (network).
bench-formats: $(BENCH_BINS) $(PROGRAMS)
	bench/formats.sh $(BIN)
bench-peers: $(PROGRAMS)
	bench/peers.sh $(BIN)

# Issue 15: --wire f32|bf16|fp8 on the medium preset: top-1 agreement and KL of
# each format's cluster logits against moe-run's, and bytes per token per layer.
bench-wire: $(BENCH_BINS) $(PROGRAMS)
	bench/wire.sh $(BIN)

# Issue 15: nodes and coordinators pinned to cores of their own (a host of
# 12+ cores; bench/scale.sh says which variables pick the layout), and the
# cluster over shaped test-host links (root: network namespaces).
bench-scale: $(BENCH_BINS) $(PROGRAMS)
	bench/scale.sh $(BIN)

bench-links: $(BENCH_BINS) $(PROGRAMS)
	bench/links.sh $(BIN)

# ---- fuzzing (docs/FUZZING.md) ---------------------------------------------------------
# libFuzzer harnesses of fuzz/, built with clang against the sources of the
# modules they drive (compiled again into build/fuzz/ with ASan + UBSan and
# coverage). `make fuzz` runs each for FUZZ_SECONDS on a working corpus in
# build/fuzz/corpus/ seeded from fuzz/corpus/; `make fuzz-smoke` replays the
# seeds and the regression inputs of fuzz/regressions/ and fuzzes each for
# FUZZ_SMOKE_SECONDS (part of `make check`).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 8
FUZZ_TARGETS := data_plane client_rpc config safetensors tokenizer template
FUZZ_TARGETS += http  # coordinator/openai: the HTTP API's request parser and responses
FUZZ_DIR     := build/fuzz
FUZZ_OBJ     := $(FUZZ_DIR)/obj
FUZZ_BINS    := $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=c11 -O1 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
                -fno-strict-aliasing $(FUZZ_SAN) -fsanitize=fuzzer-no-link
fuzz_obj = $(patsubst %.c,$(FUZZ_OBJ)/%.o,$(1))
FUZZ_LIB_CORE  := $(FUZZ_DIR)/lib/libmoe_core.a
FUZZ_LIB_MODEL := $(FUZZ_DIR)/lib/libmoe_model.a
FUZZ_LIB_WIRE  := $(FUZZ_DIR)/lib/libmoe_wire.a
FUZZ_LIB_TOKENIZER := $(FUZZ_DIR)/lib/libmoe_tokenizer.a
FUZZ_LIB_CHAT  := $(FUZZ_DIR)/lib/libmoe_chat.a
$(FUZZ_LIB_CORE):  $(call fuzz_obj,$(CORE_SRC))
$(FUZZ_LIB_MODEL): $(call fuzz_obj,$(MODEL_SRC))
$(FUZZ_LIB_WIRE):  $(call fuzz_obj,$(WIRE_SRC)) \
                   $(patsubst $(BUILD)/gen/%.c,$(FUZZ_OBJ)/gen/%.o,$(PROTO_GEN_C))
$(FUZZ_LIB_TOKENIZER): $(call fuzz_obj,$(TOKENIZER_SRC))
$(FUZZ_LIB_CHAT):  $(call fuzz_obj,$(CHAT_SRC))
$(FUZZ_DIR)/lib/%.a:
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

$(FUZZ_DIR)/fuzz_data_plane $(FUZZ_DIR)/fuzz_client_rpc: $(FUZZ_LIB_WIRE)
$(FUZZ_DIR)/fuzz_config $(FUZZ_DIR)/fuzz_safetensors: $(FUZZ_LIB_MODEL)
$(FUZZ_DIR)/fuzz_tokenizer: $(FUZZ_LIB_TOKENIZER)
$(FUZZ_DIR)/fuzz_http: $(call fuzz_obj,coordinator/openai.c) $(FUZZ_LIB_TOKENIZER)
$(FUZZ_DIR)/fuzz_template: $(FUZZ_LIB_CHAT)
$(FUZZ_BINS): $(FUZZ_DIR)/fuzz_%: $(FUZZ_OBJ)/fuzz/fuzz_%.o $(FUZZ_LIB_CORE)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $(filter %.o,$^) \
	    $(filter-out $(FUZZ_LIB_CORE),$(filter %.a,$^)) $(FUZZ_LIB_CORE) \
	    $(LDLIBS) $(TOKENIZER_LIBS)

$(FUZZ_OBJ)/%.o: %.c | $(PROTO_GEN_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<
$(FUZZ_OBJ)/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<
$(call fuzz_obj,$(TOKENIZER_SRC)): CPPFLAGS += $(shell pkg-config --cflags libpcre2-8 libutf8proc)

fuzz-build: $(FUZZ_BINS)

# $(1): target, $(2): seconds, $(3): working corpus folder (gets the new inputs).
fuzz_run = mkdir -p $(3) $(FUZZ_DIR)/artifacts fuzz/regressions/$(1) && \
	$(FUZZ_DIR)/fuzz_$(1) -max_total_time=$(2) -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$(1)- \
	    $(3) fuzz/corpus/$(1) fuzz/regressions/$(1)

fuzz: $(FUZZ_BINS)
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_run,$(t),$(FUZZ_SECONDS),$(FUZZ_DIR)/corpus/$(t)) &&) true

fuzz-smoke: $(FUZZ_BINS)
	rm -rf $(FUZZ_DIR)/smoke && mkdir -p $(FUZZ_DIR)/smoke
	@$(foreach t,$(FUZZ_TARGETS),echo "fuzz-smoke: $(t)" && \
	    { $(call fuzz_run,$(t),$(FUZZ_SMOKE_SECONDS),$(FUZZ_DIR)/smoke/$(t)) \
	      >$(FUZZ_DIR)/smoke/$(t).log 2>&1 || { tail -n 40 $(FUZZ_DIR)/smoke/$(t).log; exit 1; }; } && \
	    grep -E '^(stat::number_of_executed_units|Done)' $(FUZZ_DIR)/smoke/$(t).log &&) true

# Regenerates the seeds of fuzz/corpus/ (encoders, st_writer, the trainer,
# the fixtures' config.json files).
$(BIN)/gen-corpus: $(OBJ)/fuzz/gen_corpus.o $(LIB_WIRE) $(LIB_TOKENIZER) $(LIB_MODEL) $(LIB_CORE)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TOKENIZER_LIBS)
fuzz-corpus: $(BIN)/gen-corpus
	mkdir -p fuzz/corpus/config
	$(BIN)/gen-corpus fuzz/corpus
	for d in $(abspath $(SHARED))/fixtures/*/; do \
	    cp $$d/config.json fuzz/corpus/config/$$(basename $$d).json; done
	for d in $(abspath $(SHARED))/fixtures-precision/*/; do \
	    cp $$d/config.json fuzz/corpus/config/$$(basename $$d).json; done

# ---- objects -------------------------------------------------------------------------
$(BUILD)/gen/proto/%.pb-c.c $(BUILD)/gen/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen $<

# Every object waits for the generated headers: any may include them.
$(OBJ)/%.o: %.c | $(PROTO_GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(call obj,$(BOOT_SRC)): CPPFLAGS += $(MPI_CFLAGS)  # mpi.h, for boot.c only
$(call obj,$(TOKENIZER_SRC)): CPPFLAGS += $(shell pkg-config --cflags libpcre2-8 libutf8proc)

$(OBJ)/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

clean:
	rm -rf build

clean-models:
	@du -sh $(MODELS) 2>/dev/null | sed 's/^/clean-models: removing /' || true
	rm -rf $(MODELS)

.PHONY: all test check run bench bench-families bench-formats bench-peers bench-wire bench-scale bench-links bench-rebalance clean clean-models fuzz fuzz-smoke fuzz-build fuzz-corpus
.SECONDARY: $(PROTO_GEN_C) $(PROTO_GEN_H)  # generated sources are kept, not intermediates
-include $(shell find $(BUILD)/obj $(FUZZ_OBJ) -name '*.d' 2>/dev/null)
