#include "server/agent_main.h"

int main(int argc, char** argv) { return cbt::agent::AgentMain(argc, argv); }
